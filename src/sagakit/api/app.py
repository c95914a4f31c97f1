"""The admin API (FastAPI): read sagas, watch them live, and act on the ones in trouble.

Every action is a message to the orchestrator through the saga store's outbox, the
same way ``sagakit retry`` sends one: the orchestrator decides it and records who
asked and why. The API never writes a saga's log itself; it puts each action on the
record (``saga_audit``, :mod:`sagakit.audit`) in the same transaction as its message.
What every request must be before it is read (a caller, a bounded body, JSON) is
:mod:`.guard`'s; sessions, the audit view and the documentation page are routers of
their own.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse, PlainTextResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import Scope

from sagakit.api import audit, insights, sessions
from sagakit.api.auth import Token
from sagakit.api.base import (
    ACTION_ERRORS,
    MAX_OFFSET,
    READ_ERRORS,
    AdminConfig,
    Caller,
    Operator,
    Status,
    config_of,
    saga_json,
)
from sagakit.api.docs import serve_docs
from sagakit.api.guard import harden
from sagakit.engine.breakers import read_all
from sagakit.engine.orchestrator import operator_message, signal_message
from sagakit.errors import CorruptLogError, UnknownSagaError
from sagakit.model.describe import describe, outcome
from sagakit.model.events import decode
from sagakit.model.messages import Outgoing
from sagakit.observe.redaction import Redaction, redact_json
from sagakit.ports import DeadLetter, SagaRow
from sagakit.stores.sql import SqlSagaStore

STATIC = Path(__file__).parent / "static"

__all__ = ["AdminConfig", "create_admin_app"]


class Note(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field(default="", max_length=2000)


class RequiredNote(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field(min_length=1, max_length=2000)


def _letter(letter: DeadLetter, redaction: Redaction) -> dict[str, Any]:
    headers = letter.message.headers
    return {
        "id": letter.id,
        "queue": letter.queue,
        "reason": letter.reason,
        "detail": letter.detail,
        "attempts": letter.attempts,
        "dead_at": letter.dead_at,
        "message_id": letter.message.message_id,
        "type": headers.get("type"),
        "saga_id": headers.get("saga_id"),
        "body": redact_json(letter.message.body, redaction),
    }


def create_admin_app(config: AdminConfig) -> FastAPI:
    app = FastAPI(
        title="sagakit admin",
        description="Read sagas, watch them live, and act on the ones in trouble. Every "
        "route but the documentation needs a token (Authorization: Bearer) or a session "
        "(POST /api/session).",
        version="1",
        docs_url=None,
        openapi_url="/api/openapi.json",
        redoc_url=None,
    )
    app.state.admin = config
    app.include_router(_reads, responses=READ_ERRORS)
    app.include_router(_actions, responses=ACTION_ERRORS)
    app.include_router(sessions.router, responses=READ_ERRORS)
    app.include_router(audit.router, responses=READ_ERRORS)
    app.include_router(insights.router, responses=ACTION_ERRORS)
    serve_docs(app, docs_url="/api/docs", openapi_url="/api/openapi.json", title="sagakit admin")
    _serve_dashboard(app)

    def identify(scope: Scope) -> bool:
        request = Request(scope)
        return config.authenticator.identify_request(request.headers, request.cookies) is not None

    return harden(app, max_body=config.max_body, identify=identify, public=_public)


def _public(path: str) -> bool:
    """The dashboard's files and the API's documentation: code, not data."""
    return path in {"/", "/api/openapi.json", "/api/docs", "/api/docs/start.js"} or (
        path.startswith(("/assets/", "/api/docs/assets/"))
    )


_reads = APIRouter()
_actions = APIRouter()


@_reads.get("/api/me")
async def me(token: Caller) -> dict[str, str]:
    return {"name": token.name, "role": token.role}


@_reads.get("/api/stats")
async def stats(request: Request, token: Caller) -> dict[str, Any]:
    config = config_of(request)
    counts = await config.saga_store.count_by_status()
    now = time.time()
    lags = {store.url_safe: await store.outbox_lag(now) for store in _all_stores(config)}
    waiting = 0
    if config.approval_steps:
        waiting = await config.saga_store.count_sagas(status="running", steps=config.approval_steps)
    return {
        "sagas": counts,
        "in_flight": counts.get("running", 0) + counts.get("compensating", 0),
        "needs_attention": counts.get("needs_attention", 0),
        "waiting_approval": waiting,
        "dead_letters": await config.dead_letters.depth() if config.dead_letters else 0,
        "outbox_lag_s": lags,
    }


class SagaFilter(BaseModel):
    status: Status | None = None
    definition: str | None = Field(default=None, max_length=200)
    key: str | None = Field(default=None, max_length=200)
    since: float | None = Field(default=None, allow_inf_nan=False)
    until: float | None = Field(default=None, allow_inf_nan=False)
    limit: int = Field(default=50, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)


@_reads.get("/api/sagas")
async def sagas(
    request: Request, token: Caller, where: Annotated[SagaFilter, Query()]
) -> dict[str, Any]:
    store = config_of(request).saga_store
    filters = where.model_dump(exclude={"limit", "offset"})
    rows = await store.list_sagas(**filters, limit=where.limit, offset=where.offset)
    return {"items": [saga_json(r) for r in rows], "total": await store.count_sagas(**filters)}


@_reads.get("/api/sagas/{saga_id}", responses={404: ACTION_ERRORS[404]})
async def saga(request: Request, saga_id: str, token: Caller) -> dict[str, Any]:
    config = config_of(request)
    try:
        history = await config.saga_store.history(saga_id)
    except UnknownSagaError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    row = await _row(config.saga_store, saga_id)
    start = history[0].recorded_at
    events: list[dict[str, Any]] = []
    trace = None
    for stored in history:
        item: dict[str, Any] = {
            "seq": stored.seq,
            "type": stored.type,
            "at": stored.recorded_at,
            "elapsed_ms": round((stored.recorded_at - start) * 1000),
            "step": None,
            "participant": None,
        }
        try:
            event = decode(stored)
        except CorruptLogError as exc:
            events.append({**item, "outcome": "failed", "text": f"unreadable: {exc.reason}"})
            continue
        step = getattr(event, "step", None)
        trace = trace or getattr(event, "traceparent", None)
        owner = config.participant_of(row.definition, step) if row and step else None
        events.append(
            {
                **item,
                "step": step,
                "participant": owner,
                "outcome": outcome(event),
                "text": describe(event),
            }
        )
    trace_id = trace.split("-")[1] if trace and trace.count("-") >= 3 else None
    return {"saga": saga_json(row) if row else None, "trace_id": trace_id, "events": events}


@_reads.get("/api/dead-letters")
async def dead_letters(
    request: Request, token: Caller, limit: Annotated[int, Query(ge=1, le=10_000)] = 100
) -> dict[str, Any]:
    config = config_of(request)
    queue = config.dead_letters
    if queue is None:
        return {"items": [], "depth": 0}
    return {
        "items": [_letter(x, config.redaction) for x in await queue.list(limit=limit)],
        "depth": await queue.depth(),
    }


@_reads.get("/api/approvals")
async def pending_approvals(request: Request, token: Caller) -> dict[str, Any]:
    config = config_of(request)
    if not config.approval_steps:
        return {"items": []}
    rows = await config.saga_store.list_sagas(
        status="running", steps=config.approval_steps, limit=1000
    )
    return {"items": [saga_json(r) for r in rows]}


@_reads.get("/api/breakers")
async def breakers(request: Request, token: Caller) -> dict[str, Any]:
    items: list[dict[str, Any]] = []
    for store in _all_stores(config_of(request)):
        async with store.unit() as unit:
            items.extend({"store": store.url_safe, **row} for row in await read_all(unit))
    return {"items": items}


@_reads.get("/api/outbox")
async def outbox(request: Request, token: Caller) -> dict[str, Any]:
    now = time.time()
    return {
        "items": [
            {
                "store": store.url_safe,
                "lag_s": await store.outbox_lag(now),
                "unsent": await store.unsent_count(),
            }
            for store in _all_stores(config_of(request))
        ]
    }


@_reads.get("/api/stream", response_class=StreamingResponse)
async def stream(request: Request, token: Caller) -> StreamingResponse:
    return StreamingResponse(
        _changes(request, config_of(request)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@_reads.get("/metrics", response_class=PlainTextResponse)
async def metrics(request: Request, token: Caller) -> Response:
    config = config_of(request)
    await config.metrics.refresh(
        config.saga_store,
        stores=list(config.stores),
        dead_letters=config.dead_letters,
        now=time.time(),
    )
    return Response(config.metrics.generate(), media_type="text/plain; version=0.0.4")


# ---------------------------------------------------------------------------- actions

OperatorAction = Literal["retry", "compensate", "resolve"]
Answer = Literal["approve", "reject"]


async def _queue(
    request: Request, saga_id: str, message: Outgoing, *, token: Token, action: str, note: str
) -> dict[str, Any]:
    """The action's message and its line on the record, in one transaction."""
    store = config_of(request).saga_store
    if await _row(store, saga_id) is None:
        raise HTTPException(status_code=404, detail=f"no saga with id {saga_id!r}")
    async with store.unit() as unit:
        await unit.enqueue([message])
        await audit.record_for(unit, token=token, action=action, target=saga_id, note=note)
    return {"accepted": True, "saga_id": saga_id}


async def _operate(
    request: Request, saga_id: str, action: OperatorAction, token: Token, note: str
) -> dict[str, Any]:
    group = config_of(request).group
    message = operator_message(saga_id, action, who=token.name, note=note, group=group)
    return await _queue(request, saga_id, message, token=token, action=action, note=note)


async def _answer(
    request: Request, saga_id: str, answer: Answer, token: Token, note: str
) -> dict[str, Any]:
    group = config_of(request).group
    message = signal_message(saga_id, answer, who=token.name, note=note, group=group)
    return await _queue(request, saga_id, message, token=token, action=answer, note=note)


@_actions.post("/api/sagas/{saga_id}/retry", status_code=202)
async def retry(request: Request, saga_id: str, token: Operator, body: Note) -> dict[str, Any]:
    return await _operate(request, saga_id, "retry", token, body.note)


@_actions.post("/api/sagas/{saga_id}/compensate", status_code=202)
async def compensate(request: Request, saga_id: str, token: Operator, body: Note) -> dict[str, Any]:
    return await _operate(request, saga_id, "compensate", token, body.note)


@_actions.post("/api/sagas/{saga_id}/resolve", status_code=202)
async def resolve(
    request: Request, saga_id: str, token: Operator, body: RequiredNote
) -> dict[str, Any]:
    return await _operate(request, saga_id, "resolve", token, body.note)


@_actions.post("/api/sagas/{saga_id}/approve", status_code=202)
async def approve(request: Request, saga_id: str, token: Operator, body: Note) -> dict[str, Any]:
    return await _answer(request, saga_id, "approve", token, body.note)


@_actions.post("/api/sagas/{saga_id}/reject", status_code=202)
async def reject(
    request: Request, saga_id: str, token: Operator, body: RequiredNote
) -> dict[str, Any]:
    return await _answer(request, saga_id, "reject", token, body.note)


@_actions.post("/api/dead-letters/{letter_id}/replay")
async def replay(request: Request, letter_id: str, token: Operator, body: Note) -> dict[str, int]:
    """Send a dead letter back to its queue; recorded with who and why."""
    config = config_of(request)
    queue = config.dead_letters
    if queue is None:
        raise HTTPException(status_code=404, detail="no dead-letter queue here")
    try:
        await queue.get(letter_id)
    except LookupError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    async with config.saga_store.unit() as unit:
        note = body.note
        await audit.record_for(unit, token=token, action="replay", target=letter_id, note=note)
    return {"replayed": await queue.replay([letter_id])}


def _all_stores(config: AdminConfig) -> list[SqlSagaStore]:
    return list({id(s): s for s in (config.saga_store, *config.stores)}.values())


async def _row(store: SqlSagaStore, saga_id: str) -> SagaRow | None:
    return await store.row(saga_id)


async def _changes(request: Request, config: AdminConfig) -> AsyncIterator[bytes]:
    """Every saga change as a server-sent event, watched through the projection (whose
    times are the deciders', so the watermark starts from the newest change there)."""
    newest = await config.saga_store.list_sagas(limit=1)
    since = newest[0].updated_at if newest else 0.0
    sent: dict[str, int] = {}
    quiet = 0.0
    while not await request.is_disconnected():
        rows = await config.saga_store.list_sagas(since=since, limit=500, oldest_first=True)
        for row in rows:
            if sent.get(row.saga_id) == row.version:
                continue
            sent[row.saga_id] = row.version
            since = max(since, row.updated_at)
            yield f"event: saga\ndata: {json.dumps(saga_json(row))}\n\n".encode()
        if len(sent) > 10_000:
            sent = {k: v for k, v in sent.items() if k in {r.saga_id for r in rows}}
        quiet = 0.0 if rows else quiet + config.poll
        if quiet >= 15:
            quiet = 0.0
            yield b": still here\n\n"
        await asyncio.sleep(config.poll)


def _serve_dashboard(app: FastAPI) -> None:
    """The built dashboard at ``/`` (its files are code, not data: no token needed)."""
    index = STATIC / "index.html"
    if (STATIC / "assets").is_dir():
        app.mount("/assets", StaticFiles(directory=STATIC / "assets"), name="assets")

    @app.get("/", include_in_schema=False)
    async def dashboard() -> Response:
        if not index.exists():
            return Response(
                "The dashboard is not built: run `make dashboard` (npm ci && npm run build).",
                media_type="text/plain",
                status_code=503,
            )
        return FileResponse(index)
