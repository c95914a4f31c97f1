"""The admin API's views of the whole system, read from the stores: outcomes over time,
latency percentiles, failure reasons, dead-letter depth and outbox lag; searching sagas;
one saga's timeline with its data; the definitions with their counts; and operators'
actions on several sagas at once.

Every piece of saga data this module answers with (a step's input and reply, the saga's
data after a step) passes through the admin API's redaction (``AdminConfig.redaction``,
:mod:`sagakit.observe.redaction`) first. Bulk actions go on the record (:mod:`sagakit.audit`)
one line per saga, in the transaction that queues their messages.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, HTTPException, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from sagakit.api import audit
from sagakit.api.backlog import Backlog, series, thin
from sagakit.api.base import (
    ACTION_ERRORS,
    MAX_OFFSET,
    AdminConfig,
    Caller,
    Operator,
    Status,
    config_of,
    saga_json,
)
from sagakit.api.figures import (
    ENDS,
    LATENCY_EVENTS,
    OUTCOMES,
    Span,
    Window,
    failure_groups,
    percentiles,
    saga_durations,
    step_latencies,
)
from sagakit.api.timeline import timeline
from sagakit.engine.orchestrator import operator_message
from sagakit.errors import UnknownSagaError
from sagakit.model.definition import SagaDefinition, Step, StepKind
from sagakit.observe.redaction import redact
from sagakit.observe.tracing import trace_id
from sagakit.ports import SagaSearch
from sagakit.stores.findings import STOP_EVENTS

log = logging.getLogger("sagakit.api")

#: At most this many log events are read for one latency or failure figure; the answer
#: says how many it read, so a figure over a busy day says it is the newest part of it.
EVENTS_READ = 20_000


@asynccontextmanager
async def _sampling(app: FastAPI) -> AsyncIterator[None]:
    async with _backlog(app).running():
        yield


router = APIRouter(lifespan=_sampling, tags=["insights"])


def _backlog(app: FastAPI) -> Backlog:
    backlog: Backlog | None = getattr(app.state, "backlog", None)
    if backlog is None:
        config: AdminConfig = app.state.admin
        stores = list({id(s): s for s in (config.saga_store, *config.stores)}.values())
        backlog = app.state.backlog = Backlog(
            stores, config.dead_letters, every=config.sample_every
        )
    return backlog


WindowQuery = Annotated[Window, Query(description="how far back: 15m, 1h or 24h")]


def _span(window: Window) -> Span:
    return Span.ending(time.time(), window)


def _span_json(span: Span, window: Window) -> dict[str, Any]:
    return {"window": window, "since": span.since, "until": span.until, "every_s": span.every}


# ------------------------------------------------------------------------- overview


@router.get("/api/insights/outcomes")
async def outcomes(request: Request, token: Caller, window: WindowQuery = "1h") -> dict[str, Any]:
    """Sagas started, completed, compensated and needing attention in each interval."""
    span = _span(window)
    counts = await config_of(request).saga_store.events_per_interval(
        list(OUTCOMES), since=span.since, until=span.until, every=span.every
    )
    return {
        **_span_json(span, window),
        "at": span.starts(),
        "series": {OUTCOMES[kind]: counts[kind] for kind in OUTCOMES},
    }


@router.get("/api/insights/latency")
async def latency(request: Request, token: Caller, window: WindowQuery = "1h") -> dict[str, Any]:
    """p50, p95 and p99 of saga durations and of each step's tries, in seconds."""
    config = config_of(request)
    span = _span(window)
    events = await config.saga_store.recent_events(
        LATENCY_EVENTS + ENDS, since=span.since, limit=EVENTS_READ
    )
    order = {s.name: i for d in config.definitions for i, s in enumerate(d.steps)}
    found = step_latencies(events)
    steps = [
        {
            "step": step,
            "op": op,
            "participant": _participant(config, step),
            **percentiles(values),
        }
        for (step, op), values in sorted(
            found.items(), key=lambda item: (order.get(item[0][0], len(order)), item[0])
        )
    ]
    return {
        **_span_json(span, window),
        "events_read": len(events),
        "all_read": len(events) < EVENTS_READ,
        "saga": percentiles(saga_durations(events)),
        "steps": steps,
    }


@router.get("/api/insights/failures")
async def failures(request: Request, token: Caller, window: WindowQuery = "1h") -> dict[str, Any]:
    """Why sagas turned back or asked for a person, grouped by step and reason pattern,
    each with the search that lists its sagas."""
    span = _span(window)
    events = await config_of(request).saga_store.recent_events(
        STOP_EVENTS, since=span.since, limit=EVENTS_READ
    )
    groups = failure_groups(events)
    for group in groups:
        group["search"] = {
            "step": group["step"],
            "reason": group["pattern"],
            "since": span.since,
        }
    return {
        **_span_json(span, window),
        "events_read": len(events),
        "all_read": len(events) < EVENTS_READ,
        "items": groups,
    }


@router.get("/api/insights/backlog")
async def backlog(request: Request, token: Caller, window: WindowQuery = "1h") -> dict[str, Any]:
    """Dead-letter depth and each store's outbox lag over the window, as sampled."""
    sampler = _backlog(request.app)
    await sampler.fresh()
    span = _span(window)
    return {
        **_span_json(span, window),
        "sampling_since": sampler.since,
        "sample_every_s": sampler.every,
        **series(thin(sampler.between(span.since, span.until))),
    }


def _participant(config: AdminConfig, step: str) -> str | None:
    return next(
        (s.participant for d in config.definitions for s in d.steps if s.name == step), None
    )


# ------------------------------------------------------------------------ finding sagas


class SagaQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Status | None = None
    definition: str | None = Field(default=None, max_length=200)
    version: int | None = Field(default=None, ge=1, le=2**31 - 1)
    key: str | None = Field(default=None, max_length=200)
    reason: str | None = Field(default=None, max_length=500)
    step: str | None = Field(default=None, max_length=200)
    since: float | None = Field(default=None, allow_inf_nan=False)
    until: float | None = Field(default=None, allow_inf_nan=False)
    sort: Literal["changed", "duration"] = "changed"
    limit: int = Field(default=50, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)


@router.get("/api/search")
async def search(
    request: Request, token: Caller, where: Annotated[SagaQuery, Query()]
) -> dict[str, Any]:
    """Sagas by business key (``*`` any text), reason text, the step they stopped at,
    definition and version, status and last change; newest change or longest first."""
    wanted = SagaSearch(
        status=where.status,
        definition=where.definition or None,
        definition_version=where.version,
        key=where.key or None,
        reason=where.reason or None,
        stopped_at=where.step or None,
        since=where.since,
        until=where.until,
        order=where.sort,
    )
    rows, total = await config_of(request).saga_store.search_sagas(
        wanted, limit=where.limit, offset=where.offset
    )
    return {"items": [saga_json(r) for r in rows], "total": total}


class Bulk(BaseModel):
    model_config = ConfigDict(extra="forbid")

    saga_ids: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        min_length=1, max_length=100
    )
    note: str = Field(default="", max_length=2000)


@router.post("/api/bulk/{action}", status_code=202, responses={403: ACTION_ERRORS[403]})
async def act_on_many(
    request: Request,
    action: Annotated[Literal["retry", "compensate", "resolve"], Path()],
    token: Operator,
    body: Bulk,
) -> dict[str, Any]:
    """One operator action for each of several sagas: each is queued for the
    orchestrator, which records it in that saga's log with who asked and why, and each
    goes on the record of operator actions in the same transaction."""
    if action == "resolve" and not body.note.strip():
        raise HTTPException(status_code=422, detail="resolve needs a note saying why")
    config = config_of(request)
    ids = list(dict.fromkeys(body.saga_ids))
    known = await config.saga_store.statuses(ids)
    accepted = [saga_id for saga_id in ids if saga_id in known]
    messages = [
        operator_message(s, action, who=token.name, note=body.note, group=config.group)
        for s in accepted
    ]
    if messages:
        async with config.saga_store.unit() as unit:
            await unit.enqueue(messages)
            for saga_id in accepted:
                await audit.record_for(
                    unit, token=token, action=action, target=saga_id, note=body.note
                )
    log.info("%s asked to %s %d saga(s) at once", token.name, action, len(accepted))
    return {"accepted": accepted, "unknown": [s for s in ids if s not in known]}


# ------------------------------------------------------------------------- one saga


@router.get("/api/sagas/{saga_id}/timeline", responses={404: ACTION_ERRORS[404]})
async def saga_timeline(request: Request, saga_id: str, token: Caller) -> dict[str, Any]:
    """Every try of every step and compensation on a time axis, the waits between
    them, and what each step received and gave back."""
    config = config_of(request)
    store = config.saga_store
    try:
        history = await store.history(saga_id)
    except UnknownSagaError as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    row = await store.row(saga_id)
    definition = _definition(config, row.definition, row.definition_version) if row else None
    drawn = timeline(history, definition, lambda data: redact(dict(data), config.redaction))
    traced = trace_id(drawn.pop("traceparent"))
    return {
        "saga": saga_json(row) if row else None,
        "trace_id": traced,
        "trace_url": config.trace_url.replace("{trace_id}", traced)
        if traced and config.trace_url
        else None,
        **drawn,
    }


def _definition(config: AdminConfig, name: str, version: int) -> SagaDefinition | None:
    return next((d for d in config.definitions if (d.name, d.version) == (name, version)), None)


# ------------------------------------------------------------------------ definitions


@router.get("/api/definitions")
async def definitions(request: Request, token: Caller) -> dict[str, Any]:
    """Every definition the admin API knows or the store has sagas of, with counts."""
    config = config_of(request)
    counts = await config.saga_store.count_by_definition()
    names = {(d.name, d.version) for d in config.definitions}
    names |= {(name, version) for name, version, _ in counts}
    return {
        "items": [
            _definition_json(config, name, version, counts, steps=False)
            for name, version in sorted(names)
        ]
    }


@router.get("/api/definitions/{name}/{version}", responses={404: ACTION_ERRORS[404]})
async def definition(
    request: Request,
    name: Annotated[str, Path(max_length=200)],
    version: Annotated[int, Path(ge=1, le=2**31 - 1)],
    token: Caller,
) -> dict[str, Any]:
    """One definition's steps (kinds, participants, compensations, optional and
    approval steps) by stage, as a Mermaid flowchart too, and its sagas by status."""
    config = config_of(request)
    counts = await config.saga_store.count_by_definition()
    if _definition(config, name, version) is None and not any(
        (n, v) == (name, version) for n, v, _ in counts
    ):
        raise HTTPException(status_code=404, detail=f"no definition {name!r} v{version}")
    return _definition_json(config, name, version, counts, steps=True)


def _definition_json(
    config: AdminConfig,
    name: str,
    version: int,
    counts: Mapping[tuple[str, int, str], int],
    *,
    steps: bool,
) -> dict[str, Any]:
    found = _definition(config, name, version)
    by_status = {s: n for (d, v, s), n in counts.items() if (d, v) == (name, version)}
    answer: dict[str, Any] = {
        "name": name,
        "version": version,
        "known": found is not None,
        "counts": by_status,
        "total": sum(by_status.values()),
    }
    if steps and found is not None:
        answer["stages"] = [[_step_json(step) for step in stage] for stage in found.stages]
        answer["mermaid"] = found.render_mermaid()
    return answer


def _step_json(step: Step) -> dict[str, Any]:
    policy = step.policy
    return {
        "name": step.name,
        "participant": step.participant,
        "command": step.command,
        "compensation": step.compensation,
        "kind": step.kind.value,
        "optional": step.optional,
        "timeout_s": step.timeout.total_seconds(),
        "attempts": policy.attempts,
        "on_timeout": step.on_timeout if step.kind is StepKind.APPROVAL else None,
    }
