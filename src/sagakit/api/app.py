"""The admin API (FastAPI): read sagas, watch them live, and act on the ones in trouble.

Every action is a message to the orchestrator through the saga store's outbox, the
same way ``sagakit retry`` sends one: the orchestrator decides it and records who
asked and why. The API never writes a saga's log itself.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from sagakit.api.auth import Authenticator, Token
from sagakit.breakers import read_all
from sagakit.definition import SagaDefinition, StepKind
from sagakit.errors import CorruptLogError, UnknownSagaError
from sagakit.log import decode, describe, outcome
from sagakit.messages import Outgoing
from sagakit.metrics import Metrics
from sagakit.orchestrator import operator_message, signal_message
from sagakit.ports import DeadLetter, DeadLetterQueue, SagaRow
from sagakit.stores.sql import SqlSagaStore

STATIC = Path(__file__).parent / "static"


@dataclass
class AdminConfig:
    """What the admin API reads and acts on."""

    saga_store: SqlSagaStore
    definitions: Sequence[SagaDefinition]
    tokens: Sequence[Token]
    #: Participants' stores: their breakers and outbox lag.
    stores: Sequence[SqlSagaStore] = ()
    dead_letters: DeadLetterQueue | None = None
    group: str = "orchestrator"
    metrics: Metrics = field(default_factory=Metrics)
    #: How often the live stream looks for changes, in seconds.
    poll: float = 0.5
    #: A trace viewer's address for one trace, e.g. ``http://jaeger:16686/trace/{trace_id}``:
    #: the dashboard links each saga's trace id to it.
    trace_url: str | None = None
    #: How often dead-letter depth and outbox lag are sampled for their charts, in seconds.
    sample_every: float = 5.0
    authenticator: Authenticator = field(init=False)
    approval_steps: list[str] = field(init=False)
    _owners: dict[tuple[str, str], str] = field(init=False)

    def __post_init__(self) -> None:
        self.authenticator = Authenticator(self.tokens)
        self.approval_steps = sorted(
            {s.name for d in self.definitions for s in d.steps if s.kind is StepKind.APPROVAL}
        )
        self._owners = {(d.name, s.name): s.participant for d in self.definitions for s in d.steps}
        if self.trace_url is not None:
            if "{trace_id}" not in self.trace_url:
                raise ValueError("trace_url needs {trace_id} where the trace's id goes")
            if not self.trace_url.startswith(("http://", "https://")):
                raise ValueError("trace_url must be an http:// or https:// address")

    def participant_of(self, definition: str, step: str) -> str | None:
        return self._owners.get((definition, step))


class Note(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field(default="", max_length=2000)


class RequiredNote(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field(min_length=1, max_length=2000)


def _saga(row: SagaRow) -> dict[str, Any]:
    return asdict(row)


def _letter(letter: DeadLetter) -> dict[str, Any]:
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
        "body": letter.message.body.decode("utf-8", errors="backslashreplace"),
    }


def caller(request: Request) -> Token:
    """Whoever the request's token says it is; 401 without a valid one."""
    header = request.headers.get("authorization", "")
    presented = header[7:] if header.lower().startswith("bearer ") else None
    if presented is None and request.url.path == "/api/stream":
        presented = request.query_params.get("token")  # EventSource sets no headers
    token = _config(request).authenticator.identify(presented)
    if token is None:
        raise HTTPException(
            status_code=401,
            detail="a valid token is required (Authorization: Bearer <token>)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return token


def operator(token: Annotated[Token, Depends(caller)]) -> Token:
    """An operator; 403 for a viewer."""
    if not token.may_act:
        raise HTTPException(status_code=403, detail=f"{token.name} may read but not act")
    return token


Caller = Annotated[Token, Depends(caller)]
Operator = Annotated[Token, Depends(operator)]
Status = Literal[
    "running", "compensating", "completed", "compensated", "needs_attention", "resolved"
]


def _config(request: Request) -> AdminConfig:
    config: AdminConfig = request.app.state.admin
    return config


def create_admin_app(config: AdminConfig) -> FastAPI:
    app = FastAPI(
        title="sagakit admin",
        description="Read sagas, watch them live, and act on the ones in trouble.",
        version="1",
        docs_url="/api/docs",
        openapi_url="/api/openapi.json",
        redoc_url=None,
    )
    app.state.admin = config
    app.include_router(_reads)
    app.include_router(_actions)
    from sagakit.api.insights import insights  # it builds on this module's dependencies

    app.include_router(insights)
    _serve_dashboard(app)
    return app


_reads = APIRouter()
_actions = APIRouter()


@_reads.get("/api/me")
async def me(token: Caller) -> dict[str, str]:
    return {"name": token.name, "role": token.role}


@_reads.get("/api/stats")
async def stats(request: Request, token: Caller) -> dict[str, Any]:
    config = _config(request)
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
    since: float | None = None
    until: float | None = None
    limit: int = Field(default=50, ge=1, le=1000)
    offset: int = Field(default=0, ge=0)


@_reads.get("/api/sagas")
async def sagas(
    request: Request, token: Caller, where: Annotated[SagaFilter, Query()]
) -> dict[str, Any]:
    store = _config(request).saga_store
    filters = where.model_dump(exclude={"limit", "offset"})
    rows = await store.list_sagas(**filters, limit=where.limit, offset=where.offset)
    return {"items": [_saga(r) for r in rows], "total": await store.count_sagas(**filters)}


@_reads.get("/api/sagas/{saga_id}")
async def saga(request: Request, saga_id: str, token: Caller) -> dict[str, Any]:
    config = _config(request)
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
    return {"saga": _saga(row) if row else None, "trace_id": trace_id, "events": events}


@_reads.get("/api/dead-letters")
async def dead_letters(
    request: Request, token: Caller, limit: Annotated[int, Query(ge=1, le=10_000)] = 100
) -> dict[str, Any]:
    queue = _config(request).dead_letters
    if queue is None:
        return {"items": [], "depth": 0}
    return {
        "items": [_letter(x) for x in await queue.list(limit=limit)],
        "depth": await queue.depth(),
    }


@_reads.get("/api/approvals")
async def pending_approvals(request: Request, token: Caller) -> dict[str, Any]:
    config = _config(request)
    if not config.approval_steps:
        return {"items": []}
    rows = await config.saga_store.list_sagas(
        status="running", steps=config.approval_steps, limit=1000
    )
    return {"items": [_saga(r) for r in rows]}


@_reads.get("/api/breakers")
async def breakers(request: Request, token: Caller) -> dict[str, Any]:
    items: list[dict[str, Any]] = []
    for store in _all_stores(_config(request)):
        async with store.unit() as unit:
            items.extend(
                {"store": store.url_safe, **row} for row in await read_all(unit.connection)
            )
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
            for store in _all_stores(_config(request))
        ]
    }


@_reads.get("/api/stream")
async def stream(request: Request, token: Caller) -> StreamingResponse:
    return StreamingResponse(
        _changes(request, _config(request)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@_reads.get("/metrics")
async def metrics(request: Request, token: Caller) -> Response:
    config = _config(request)
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


async def _queue(request: Request, saga_id: str, message: Outgoing) -> dict[str, Any]:
    store = _config(request).saga_store
    if await _row(store, saga_id) is None:
        raise HTTPException(status_code=404, detail=f"no saga with id {saga_id!r}")
    async with store.unit() as unit:
        await unit.enqueue([message])
    return {"accepted": True, "saga_id": saga_id}


async def _operate(
    request: Request, saga_id: str, action: OperatorAction, token: Token, note: str
) -> dict[str, Any]:
    group = _config(request).group
    message = operator_message(saga_id, action, who=token.name, note=note, group=group)
    return await _queue(request, saga_id, message)


async def _answer(
    request: Request, saga_id: str, answer: Answer, token: Token, note: str
) -> dict[str, Any]:
    group = _config(request).group
    message = signal_message(saga_id, answer, who=token.name, note=note, group=group)
    return await _queue(request, saga_id, message)


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
    queue = _config(request).dead_letters
    if queue is None:
        raise HTTPException(status_code=404, detail="no dead-letter queue here")
    try:
        await queue.get(letter_id)
    except LookupError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    return {"replayed": await queue.replay([letter_id])}


def _all_stores(config: AdminConfig) -> list[SqlSagaStore]:
    return list({id(s): s for s in (config.saga_store, *config.stores)}.values())


async def _row(store: SqlSagaStore, saga_id: str) -> SagaRow | None:
    from sqlalchemy import select

    from sagakit.stores.schema import sagas
    from sagakit.stores.sql import _row as to_row

    async with store.unit() as unit:
        found = (
            await unit.connection.execute(select(sagas).where(sagas.c.saga_id == saga_id))
        ).first()
    return to_row(found) if found is not None else None


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
            yield f"event: saga\ndata: {json.dumps(_saga(row))}\n\n".encode()
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
