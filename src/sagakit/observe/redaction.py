"""Personal data out of sight: one setting, applied wherever data leaves the saga.

The setting names fields (``email``: any field of that name, at any depth) or paths
(``card.*``: everything under ``card`` at the top; ``customer.name``: that one field).
Logs (a structlog processor), spans (their attributes), and the admin API's views of
sagas and dead letters all pass data through :func:`redact`, so a field named once is
hidden everywhere. It comes from ``SAGAKIT_REDACT`` (comma-separated) unless a process
sets it with :func:`configure`.

:func:`printable` is the other half of keeping logs honest: control characters in
text a person wrote (an operator's note, a participant's reason) are escaped, so a
NUL or a right-to-left override cannot hide or reorder what a log line says.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: What a hidden value is shown as.
MASK = "***"

_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][\w+.-]*://[^\s:/@'\"]*:)[^\s@/'\"]*@")

_CONTROL = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]"
)


@dataclass(frozen=True, slots=True)
class Redaction:
    """Which fields to hide: names (anywhere) and dotted paths from the top (``*`` for
    any one key)."""

    fields: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Redaction:
        return cls(tuple(item.strip() for item in text.split(",") if item.strip()))

    def __bool__(self) -> bool:
        return bool(self.fields)

    def hides(self, path: tuple[str, ...]) -> bool:
        """Whether the field at ``path`` (keys from the top) is hidden."""
        for rule in self.fields:
            parts = rule.split(".")
            if len(parts) == 1 and parts[0] != "*":
                if path and path[-1] == parts[0]:
                    return True
            elif len(path) >= len(parts) and all(
                want in {"*", got} for want, got in zip(parts, path, strict=False)
            ):
                return True
        return False

    def apply(self, value: Any, path: tuple[str, ...] = ()) -> Any:
        """``value`` with every hidden field's value replaced by ``MASK``."""
        if not self.fields:
            return value
        if isinstance(value, Mapping):
            return {
                k: MASK if self.hides((*path, str(k))) else self.apply(v, (*path, str(k)))
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.apply(v, path) for v in value]
        return value


_configured: Redaction | None = None


def configure(fields: Iterable[str] | Redaction | None) -> Redaction:
    """Set this process's redaction (``None``: back to ``SAGAKIT_REDACT``)."""
    global _configured  # noqa: PLW0603 - one setting per process, as logging's is
    if fields is None or isinstance(fields, Redaction):
        _configured = fields
    else:
        _configured = Redaction(tuple(fields))
    return current()


def current() -> Redaction:
    """The process's redaction: what :func:`configure` set, else ``SAGAKIT_REDACT``."""
    if _configured is not None:
        return _configured
    return _from_env(os.environ.get("SAGAKIT_REDACT", ""))


@functools.lru_cache(maxsize=8)
def _from_env(text: str) -> Redaction:
    """Every log line asks: the variable is parsed once per value it takes."""
    return Redaction.parse(text)


def redact(value: Any, redaction: Redaction | None = None) -> Any:
    """``value`` (a mapping, a list, or anything) with hidden fields masked."""
    return (redaction if redaction is not None else current()).apply(value)


def shown(field: str, value: object, redaction: Redaction | None = None) -> str:
    """``value`` as text for a sentence, or ``MASK`` when ``field`` is hidden."""
    rules = redaction if redaction is not None else current()
    return MASK if rules.hides((field,)) else str(value)


def redact_attributes(
    attributes: Mapping[str, Any], redaction: Redaction | None = None
) -> dict[str, Any]:
    """A span's attributes: a dotted name (``order.customer``) is a path."""
    rules = redaction if redaction is not None else current()
    return {k: MASK if rules.hides(tuple(k.split("."))) else v for k, v in attributes.items()}


def redact_json(body: bytes | str, redaction: Redaction | None = None) -> str:
    """A message body as text, its hidden fields masked when it is JSON (a body that
    is not JSON is shown as it is only when nothing is to be hidden)."""
    rules = redaction if redaction is not None else current()
    text = body.decode("utf-8", errors="backslashreplace") if isinstance(body, bytes) else body
    if not rules:
        return text
    try:
        parsed = json.loads(text)
    except ValueError:
        return f"{MASK} ({len(text)} characters, not JSON)"
    return json.dumps(rules.apply(parsed))


def mask_urls(text: str) -> str:
    """``text`` with the password of every URL in it masked (``amqp://guest:***@host``)."""
    return _URL_PASSWORD.sub(lambda m: f"{m.group('head')}{MASK}@", text)


def printable(text: str) -> str:
    """``text`` with control and direction-changing characters escaped (``\\x00``,
    ``\\u202e``); newlines and tabs are kept."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def log_processor(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog: hidden fields masked, URLs' passwords masked, and control characters
    in every text escaped."""
    rules = current()
    out: dict[str, Any] = {}
    for key, value in event_dict.items():
        if rules and rules.hides((key,)):
            out[key] = MASK
            continue
        masked = rules.apply(value, (key,)) if rules else value
        out[key] = printable(mask_urls(masked)) if isinstance(masked, str) else masked
    return out
