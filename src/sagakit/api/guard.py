"""The edge of every HTTP server sagakit runs: what a request must be before it is read.

:class:`Guard` is plain ASGI middleware, outside the framework, so it acts before any
route reads a body:

* the caller is identified first (when the server has callers): no valid token or
  session, 401, and the body is never read;
* a body over ``max_body`` bytes is refused with 413, by its ``Content-Length`` before
  reading, or as soon as the bytes read pass the limit;
* a JSON body that is not JSON (malformed, not UTF-8, or with ``NaN``, ``Infinity`` or
  a number no float can hold) answers 422, saying why;
* every response carries strict security headers: a Content Security Policy with no
  inline script, no framing, no MIME sniffing, no referrer.

:func:`harden` puts it on a FastAPI app with a validation-error handler that can
always answer (an input holding ``NaN`` made FastAPI's own fail with a 500).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Bodies above this many bytes are refused unless a server says otherwise.
MAX_BODY = 64 * 1024
#: The variable a deployment sets the limit with, read at the edges (max_body_from).
MAX_BODY_ENV = "SAGAKIT_MAX_BODY"


def max_body_from(env: Mapping[str, str], default: int = MAX_BODY) -> int:
    """The request body limit ``SAGAKIT_MAX_BODY`` sets (bytes, or with a ``k``/``m``
    suffix), or ``default``; a value that is not a positive size is refused by name."""
    raw = env.get(MAX_BODY_ENV, "").strip().lower()
    if not raw:
        return default
    scale = {"k": 1024, "m": 1024 * 1024}.get(raw[-1], 1)
    digits = raw[:-1] if scale > 1 else raw
    if not digits.isdigit() or int(digits) == 0:
        raise ValueError(f"{MAX_BODY_ENV}={raw!r} is not a size in bytes (e.g. 65536, 64k or 1m)")
    return int(digits) * scale


SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; "
        b"img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
        b"form-action 'self'; frame-ancestors 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
)

_BODILESS = {"GET", "HEAD", "OPTIONS"}


class _Disconnected(Exception):
    """The client went away before its whole body arrived."""


class RefusedBody(ValueError):
    """A JSON body holds something that is not JSON (NaN, Infinity, an endless number)."""


def _constant(name: str) -> Any:
    raise RefusedBody(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise RefusedBody(f"the number {text[:40]} is out of range")
    return value


def check_json(body: bytes) -> None:
    """Raise RefusedBody for a body that is not JSON: malformed, not UTF-8, or with NaN,
    Infinity or an out-of-range number."""
    try:
        json.loads(body, parse_constant=_constant, parse_float=_finite)
    except RefusedBody:
        raise
    except UnicodeDecodeError as exc:
        raise RefusedBody("the body is not UTF-8 text") from exc
    except json.JSONDecodeError as exc:
        raise RefusedBody(f"the body is not JSON: {exc.msg} at line {exc.lineno}") from exc


class Guard:
    """ASGI middleware: identify, bound the body, refuse non-JSON numbers, add headers.

    ``identify(scope)`` says whether the caller may come in at all (None: nobody needs
    to); ``public(path)`` names the paths anyone may read (the dashboard's files, the
    API's documentation)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body: int = MAX_BODY,
        identify: Callable[[Scope], bool] | None = None,
        public: Callable[[str], bool] = lambda _path: False,
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.identify = identify
        self.public = public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = _with_headers(send)
        if (
            self.identify is not None
            and not self.public(scope["path"])
            and not self.identify(scope)
        ):
            await _answer(
                send,
                401,
                "a valid token is required (Authorization: Bearer <token>, or a session)",
                [(b"www-authenticate", b"Bearer")],
            )
            return
        if scope["method"] in _BODILESS:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body:
            await _answer(send, 413, f"the body is over {self.max_body} bytes")
            return
        try:
            body = await self._read(receive)
        except _Disconnected:
            return  # the client left before sending its whole body: nothing to answer
        if body is None:
            await _answer(send, 413, f"the body is over {self.max_body} bytes")
            return
        if body and _is_json(scope):
            try:
                check_json(body)
            except RefusedBody as exc:
                await _answer(send, 422, str(exc))
                return
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _is_json(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            kind: bytes = value.split(b";")[0].strip().lower()
            return kind == b"application/json" or kind.endswith(b"+json")
    return False


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: the disconnect, when it comes

    return again


def _with_headers(send: Send) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            present = {name.lower() for name, _ in headers}
            headers += [(k, v) for k, v in SECURITY_HEADERS if k not in present]
            message = {**message, "headers": headers}
        await send(message)

    return sending


async def _answer(
    send: Send, status: int, detail: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


async def _invalid(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _json_safe(jsonable_encoder(exc.errors()))
    return JSONResponse({"detail": errors}, status_code=422)


def harden(
    app: FastAPI,
    *,
    max_body: int = MAX_BODY,
    identify: Callable[[Scope], bool] | None = None,
    public: Callable[[str], bool] = lambda _path: False,
) -> FastAPI:
    """Put :class:`Guard` in front of ``app`` and make its 422s always answerable."""
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_middleware(Guard, max_body=max_body, identify=identify, public=public)
    return app
