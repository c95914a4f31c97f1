"""The events of a saga's log, and how each is stored and read back.

Every change to a saga is one of these events, appended to its log; a stored event
names its type and schema version, and older versions are upcast as they are read.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from sagakit.errors import CorruptLogError
from sagakit.model.messages import Op
from sagakit.model.status import SagaStatus


class SagaEvent(BaseModel):
    """Base of every log event. ``event_type`` and ``schema_version`` name its stored form."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1


class SagaStarted(SagaEvent):
    """``rules_version`` pins the routing rules the saga runs under for its whole life."""

    event_type: ClassVar[str] = "SagaStarted"
    definition: str
    definition_version: int
    data: dict[str, Any]
    key: str | None = None
    rules_version: int | None = None
    #: W3C trace context of the saga's trace: every hop of the saga joins it.
    traceparent: str | None = None


class StepSkipped(SagaEvent):
    """A routing rule said this step does not run for this saga."""

    event_type: ClassVar[str] = "StepSkipped"
    step: str
    rule: str


class ApprovalRequested(SagaEvent):
    """The saga waits for a person to approve or reject, until ``deadline``."""

    event_type: ClassVar[str] = "ApprovalRequested"
    step: str
    deadline: float | None = None


class StepRequested(SagaEvent):
    event_type: ClassVar[str] = "StepRequested"
    step: str
    attempt: int
    message_id: str
    deadline: float | None = None


class StepSucceeded(SagaEvent):
    """``locks_at`` names the participant if it now holds semantic locks for the saga."""

    event_type: ClassVar[str] = "StepSucceeded"
    step: str
    attempt: int
    data: dict[str, Any] = {}
    locks_at: str | None = None


class StepFailed(SagaEvent):
    """Version 2 split v1's ``error`` into ``reason`` and ``retryable``."""

    event_type: ClassVar[str] = "StepFailed"
    schema_version: ClassVar[int] = 2
    step: str
    attempt: int
    reason: str
    retryable: bool
    locks_at: str | None = None
    #: A dependency was unavailable (an open breaker): this try does not count.
    deferred: bool = False
    #: The participant said it did the work, but its reply broke the step's contract:
    #: not retried, yet owed its compensation, as the work may be there.
    done: bool = False


class StepTimedOut(SagaEvent):
    event_type: ClassVar[str] = "StepTimedOut"
    step: str
    op: Op
    attempt: int


class RetryScheduled(SagaEvent):
    event_type: ClassVar[str] = "RetryScheduled"
    step: str
    op: Op
    attempt: int
    due_at: float


class CompensationStarted(SagaEvent):
    event_type: ClassVar[str] = "CompensationStarted"
    step: str | None
    reason: str


class CompensationRequested(SagaEvent):
    event_type: ClassVar[str] = "CompensationRequested"
    step: str
    attempt: int
    message_id: str
    deadline: float | None = None


class StepCompensated(SagaEvent):
    event_type: ClassVar[str] = "StepCompensated"
    step: str
    attempt: int
    null: bool = False


class CompensationFailed(SagaEvent):
    event_type: ClassVar[str] = "CompensationFailed"
    step: str
    attempt: int
    reason: str
    #: A dependency was unavailable (an open breaker): this try does not count.
    deferred: bool = False


class SagaCompleted(SagaEvent):
    event_type: ClassVar[str] = "SagaCompleted"


class SagaCompensated(SagaEvent):
    event_type: ClassVar[str] = "SagaCompensated"
    reason: str


class SagaNeedsAttention(SagaEvent):
    event_type: ClassVar[str] = "SagaNeedsAttention"
    reason: str
    step: str | None = None


class OperatorIntervened(SagaEvent):
    """A person acted on the saga: retry, compensate or resolve, with who and why.

    ``refused`` says why the action could not apply (the saga had moved on); otherwise
    the saga goes on as ``resume`` says, and ``steps`` get a fresh retry budget.
    """

    event_type: ClassVar[str] = "OperatorIntervened"
    action: Literal["retry", "compensate", "resolve", "approve", "reject"]
    who: str
    note: str
    resume: SagaStatus | None = None
    steps: list[str] = []
    refused: str | None = None


class LocksReleased(SagaEvent):
    """The saga is ending: its semantic locks at these participants are released."""

    event_type: ClassVar[str] = "LocksReleased"
    participants: list[str]


class ReplyIgnored(SagaEvent):
    """A reply that changes nothing: a duplicate, a stale attempt, or a zombie."""

    event_type: ClassVar[str] = "ReplyIgnored"
    step: str
    op: Op
    attempt: int
    ok: bool
    why: str
    message_id: str


EVENT_TYPES: dict[str, type[SagaEvent]] = {
    cls.event_type: cls
    for cls in (
        SagaStarted,
        StepSkipped,
        ApprovalRequested,
        StepRequested,
        StepSucceeded,
        StepFailed,
        StepTimedOut,
        RetryScheduled,
        CompensationStarted,
        CompensationRequested,
        StepCompensated,
        CompensationFailed,
        SagaCompleted,
        SagaCompensated,
        SagaNeedsAttention,
        OperatorIntervened,
        LocksReleased,
        ReplyIgnored,
    )
}

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


def _step_failed_v1(data: dict[str, Any]) -> dict[str, Any]:
    # v1 recorded every failure as final and kept its message in ``error``.
    out = {k: v for k, v in data.items() if k != "error"}
    out["reason"] = data.get("error", "unknown")
    out["retryable"] = False
    return out


#: (event type, stored version) -> function lifting that version's data one version up.
UPCASTERS: dict[tuple[str, int], Upcaster] = {("StepFailed", 1): _step_failed_v1}


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as the store keeps it: position in its saga's log, type, version, JSON."""

    saga_id: str
    seq: int
    type: str
    schema_version: int
    data: str
    recorded_at: float


def encode(event: SagaEvent) -> tuple[str, int, str]:
    return event.event_type, event.schema_version, event.model_dump_json()


def decode(stored: StoredEvent) -> SagaEvent:
    """Read a stored event at the current schema, upcasting older versions step by step."""
    cls = EVENT_TYPES.get(stored.type)
    if cls is None:
        raise CorruptLogError(stored.saga_id, stored.seq, f"unknown event type {stored.type!r}")
    version = stored.schema_version
    if version > cls.schema_version:
        raise CorruptLogError(
            stored.saga_id,
            stored.seq,
            f"{stored.type} v{version} is newer than this reader (v{cls.schema_version})",
        )
    try:
        data = json.loads(stored.data)
    except ValueError as exc:
        raise CorruptLogError(stored.saga_id, stored.seq, "data is not JSON") from exc
    if not isinstance(data, dict):
        raise CorruptLogError(stored.saga_id, stored.seq, "data is not a JSON object")
    while version < cls.schema_version:
        upcast = UPCASTERS.get((stored.type, version))
        if upcast is None:
            raise CorruptLogError(
                stored.saga_id, stored.seq, f"no upcaster for {stored.type} v{version}"
            )
        data = upcast(data)
        version += 1
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise CorruptLogError(stored.saga_id, stored.seq, detail) from exc
