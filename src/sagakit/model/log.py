"""The saga log: the events of one saga instance, and the state that is their fold.

A saga's state is never stored as the truth; it is recomputed from its events (with a
snapshot to skip the old ones). ``apply`` refuses any event that would move a saga or a
step backwards, so every log that loads is a forward-only history.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from sagakit.errors import CorruptLogError, SagaError
from sagakit.model.messages import Op


class SagaStatus(StrEnum):
    RUNNING = "running"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    COMPENSATED = "compensated"
    NEEDS_ATTENTION = "needs_attention"
    RESOLVED = "resolved"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset(
    {
        SagaStatus.COMPLETED,
        SagaStatus.COMPENSATED,
        SagaStatus.NEEDS_ATTENTION,
        SagaStatus.RESOLVED,
    }
)


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    RETRY_WAIT = "retry_wait"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    COMPENSATING = "compensating"
    COMPENSATION_WAIT = "compensation_wait"
    COMPENSATED = "compensated"
    SKIPPED = "skipped"


#: Where a step is while its saga is busy with it: the projection's current step.
_ACTIVE = frozenset(
    {
        StepStatus.RUNNING,
        StepStatus.RETRY_WAIT,
        StepStatus.COMPENSATING,
        StepStatus.COMPENSATION_WAIT,
    }
)


# ---------------------------------------------------------------------------- events


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


# ----------------------------------------------------------------------------- state


@dataclass(slots=True)
class StepState:
    status: StepStatus = StepStatus.PENDING
    attempt: int = 0
    compensation_attempt: int = 0
    message_id: str | None = None
    deadline: float | None = None
    retry_at: float | None = None
    #: When the outstanding request (or compensation) was made: step latency starts here.
    requested_at: float | None = None
    final_failure: bool = False
    error: str | None = None
    #: Attempts made before an operator's retry; the retry budget counts from here.
    attempt_base: int = 0
    compensation_base: int = 0

    @property
    def attempts_counted(self) -> int:
        return self.attempt - self.attempt_base

    @property
    def compensations_counted(self) -> int:
        return self.compensation_attempt - self.compensation_base


@dataclass(slots=True)
class SagaState:
    """The fold of one saga's log; ``version`` is how many events it has seen."""

    saga_id: str
    definition: str
    definition_version: int
    status: SagaStatus
    data: dict[str, Any]
    key: str | None = None
    steps: dict[str, StepState] = field(default_factory=dict)
    version: int = 0
    started_at: float = 0.0
    updated_at: float = 0.0
    reason: str | None = None
    #: True once the saga turned around to compensate (it never turns forward again).
    undoing: bool = False
    rules_version: int | None = None
    #: Participants holding semantic locks for this saga, released when it ends.
    lock_holders: list[str] = field(default_factory=list)
    traceparent: str | None = None

    def step(self, name: str) -> StepState:
        state = self.steps.get(name)
        if state is None:
            state = self.steps[name] = StepState()
        return state

    @property
    def wake_at(self) -> float | None:
        """The earliest moment something is due: a deadline or a retry."""
        times = [t for s in self.steps.values() for t in (s.deadline, s.retry_at) if t is not None]
        return min(times) if times else None

    @property
    def deadline(self) -> float | None:
        times = [s.deadline for s in self.steps.values() if s.deadline is not None]
        return min(times) if times else None

    @property
    def current_step(self) -> str | None:
        active = [name for name, s in self.steps.items() if s.status in _ACTIVE]
        return ",".join(active) if active else None


class IllegalTransition(SagaError):
    """An event would move a saga or step somewhere it may not go from where it is."""


_STATE_ADAPTER: TypeAdapter[SagaState] = TypeAdapter(SagaState)

#: Bump when SagaState's shape changes; older snapshots are then ignored and logs refolded.
SNAPSHOT_SCHEMA = 3


def state_to_json(state: SagaState) -> str:
    return _STATE_ADAPTER.dump_json(state).decode()


def state_from_json(text: str) -> SagaState:
    return _STATE_ADAPTER.validate_json(text)


_S = StepStatus
_WORKING = {_S.RUNNING, _S.RETRY_WAIT, _S.FAILED, _S.TIMED_OUT}
_STEP_MOVES: dict[str, tuple[frozenset[StepStatus], StepStatus | None]] = {
    # event (and op) -> (states it may come from, state it leads to; None keeps the state)
    "StepRequested": (frozenset({_S.PENDING, _S.RETRY_WAIT}), _S.RUNNING),
    "StepSkipped": (frozenset({_S.PENDING}), _S.SKIPPED),
    "ApprovalRequested": (frozenset({_S.PENDING, _S.RETRY_WAIT}), _S.RUNNING),
    "StepSucceeded": (frozenset(_WORKING), _S.SUCCEEDED),
    "StepFailed": (frozenset(_WORKING), _S.FAILED),
    "StepTimedOut/action": (frozenset({_S.RUNNING}), _S.TIMED_OUT),
    "RetryScheduled/action": (frozenset({_S.FAILED, _S.TIMED_OUT}), _S.RETRY_WAIT),
    "CompensationRequested": (
        frozenset({*_WORKING, _S.SUCCEEDED, _S.COMPENSATION_WAIT}),
        _S.COMPENSATING,
    ),
    "StepCompensated": (frozenset({_S.COMPENSATING, _S.COMPENSATION_WAIT}), _S.COMPENSATED),
    "CompensationFailed": (frozenset({_S.COMPENSATING}), None),
    "StepTimedOut/compensation": (frozenset({_S.COMPENSATING}), None),
    "RetryScheduled/compensation": (frozenset({_S.COMPENSATING}), _S.COMPENSATION_WAIT),
}
_SAGA_MOVES: dict[str, tuple[frozenset[SagaStatus], SagaStatus]] = {
    "CompensationStarted": (frozenset({SagaStatus.RUNNING}), SagaStatus.COMPENSATING),
    "SagaCompleted": (frozenset({SagaStatus.RUNNING}), SagaStatus.COMPLETED),
    "SagaCompensated": (frozenset({SagaStatus.COMPENSATING}), SagaStatus.COMPENSATED),
    "SagaNeedsAttention": (
        frozenset({SagaStatus.RUNNING, SagaStatus.COMPENSATING}),
        SagaStatus.NEEDS_ATTENTION,
    ),
}


def start_state(saga_id: str, event: SagaStarted, at: float) -> SagaState:
    return SagaState(
        saga_id=saga_id,
        definition=event.definition,
        definition_version=event.definition_version,
        status=SagaStatus.RUNNING,
        data=dict(event.data),
        key=event.key,
        version=1,
        started_at=at,
        updated_at=at,
        rules_version=event.rules_version,
        traceparent=event.traceparent,
    )


def apply(state: SagaState, event: SagaEvent, at: float) -> None:
    """Fold one event into ``state`` in place, refusing any backward move."""
    kind = event.event_type
    if isinstance(event, SagaStarted):
        raise IllegalTransition(f"saga {state.saga_id} was already started")
    if isinstance(event, ReplyIgnored):
        _advance(state, at)
        return
    if isinstance(event, OperatorIntervened):
        _intervene(state, event)
        _advance(state, at)
        return
    if isinstance(event, LocksReleased):
        state.lock_holders = [p for p in state.lock_holders if p not in event.participants]
        _advance(state, at)
        return
    saga_move = _SAGA_MOVES.get(kind)
    if saga_move is not None:
        sources, target = saga_move
        if state.status not in sources:
            raise IllegalTransition(f"saga {state.saga_id}: {kind} from {state.status}")
        state.status = target
        state.reason = _optional(event, "reason") or state.reason
        state.undoing = state.undoing or target is SagaStatus.COMPENSATING
        if target.terminal:
            for step in state.steps.values():
                step.deadline = step.retry_at = None
        _advance(state, at)
        return
    if state.status.terminal:
        raise IllegalTransition(f"saga {state.saga_id} is {state.status}; {kind} is too late")
    name: str = getattr(event, "step")  # noqa: B009 - every remaining event names its step
    op = _optional(event, "op")
    sources_, step_target = _STEP_MOVES[f"{kind}/{op}" if op else kind]
    step = state.step(name)
    if step.status not in sources_:
        raise IllegalTransition(f"saga {state.saga_id} step {name}: {kind} from {step.status}")
    _apply_step(step, event)
    if isinstance(event, StepRequested | CompensationRequested | ApprovalRequested):
        step.requested_at = at
    if isinstance(event, StepSucceeded):
        state.data.update(event.data)
    holder = _optional(event, "locks_at")
    if holder is not None and holder not in state.lock_holders:
        state.lock_holders.append(holder)
    if step_target is not None:
        step.status = step_target
    _advance(state, at)


_FIELDS: dict[type[SagaEvent], frozenset[str]] = {}


def _optional(event: SagaEvent, name: str) -> Any:
    """The event's field ``name``, or None for a kind of event without it. (A missing
    attribute of a pydantic model goes through its slow ``__getattr__``: a third of
    folding an event, when asked for each one.)"""
    kind = type(event)
    fields = _FIELDS.get(kind)
    if fields is None:
        fields = _FIELDS[kind] = frozenset(kind.model_fields)
    return getattr(event, name) if name in fields else None


_RESUMABLE = {
    SagaStatus.NEEDS_ATTENTION: frozenset(
        {SagaStatus.RUNNING, SagaStatus.COMPENSATING, SagaStatus.RESOLVED}
    ),
    SagaStatus.RUNNING: frozenset({SagaStatus.COMPENSATING}),
}


def _intervene(state: SagaState, event: OperatorIntervened) -> None:
    if event.refused is not None or event.resume is None:
        return
    if event.resume not in _RESUMABLE.get(state.status, frozenset()):
        raise IllegalTransition(
            f"saga {state.saga_id}: operator {event.action} from {state.status} to {event.resume}"
        )
    if event.resume is SagaStatus.RUNNING and state.undoing:
        raise IllegalTransition(f"saga {state.saga_id}: a compensating saga never runs forward")
    state.status = event.resume
    if event.resume is SagaStatus.COMPENSATING and not state.undoing:
        state.reason = f"{event.who} asked to compensate" + (
            f": {event.note}" if event.note else ""
        )
    elif event.resume is SagaStatus.RESOLVED:
        state.reason = f"resolved by {event.who}" + (f": {event.note}" if event.note else "")
    state.undoing = state.undoing or event.resume is SagaStatus.COMPENSATING
    for name in event.steps:
        step = state.step(name)
        step.attempt_base, step.compensation_base = step.attempt, step.compensation_attempt
    if event.resume.terminal:
        for step in state.steps.values():
            step.deadline = step.retry_at = None


def _apply_step(step: StepState, event: SagaEvent) -> None:
    match event:
        case StepRequested(attempt=attempt, message_id=mid, deadline=deadline):
            step.attempt, step.message_id, step.deadline, step.retry_at = (
                attempt,
                mid,
                deadline,
                None,
            )
        case StepSucceeded():
            step.deadline = step.retry_at = None
            step.error = None
        case StepSkipped():
            pass
        case ApprovalRequested(deadline=deadline):
            step.attempt, step.deadline = step.attempt + 1, deadline
        case StepFailed(reason=reason, retryable=retryable, deferred=deferred, done=done):
            step.deadline = step.retry_at = None
            step.error = reason
            step.final_failure = not retryable and not done
            if deferred:
                step.attempt_base += 1
        case StepTimedOut(op=op):
            step.deadline = None
            step.error = f"{op} timed out"
        case RetryScheduled(due_at=due):
            step.retry_at = due
        case CompensationRequested(attempt=attempt, message_id=mid, deadline=deadline):
            step.compensation_attempt, step.message_id = attempt, mid
            step.deadline, step.retry_at = deadline, None
        case StepCompensated():
            step.deadline = step.retry_at = None
        case CompensationFailed(reason=reason, deferred=deferred):
            step.deadline = None
            step.error = reason
            if deferred:
                step.compensation_base += 1
        case _:
            raise IllegalTransition(f"no step rule for {event.event_type}")


def _advance(state: SagaState, at: float) -> None:
    state.version += 1
    state.updated_at = at


def fold(saga_id: str, events: Iterable[tuple[SagaEvent, float]]) -> SagaState:
    """Recompute a saga's state from the beginning of its log."""
    state: SagaState | None = None
    for event, at in events:
        if state is None:
            if not isinstance(event, SagaStarted):
                raise IllegalTransition(f"saga {saga_id} log does not begin with SagaStarted")
            state = start_state(saga_id, event, at)
        else:
            apply(state, event, at)
    if state is None:
        raise IllegalTransition(f"saga {saga_id} has an empty log")
    return state


def fold_stored(
    saga_id: str, events: Iterable[StoredEvent], state: SagaState | None = None
) -> SagaState:
    """Fold stored events onto ``state`` (a snapshot, or None for the whole log).

    Raises CorruptLogError naming the position of the first event that is unreadable,
    out of sequence, or would move the saga backwards.
    """
    for stored in events:
        try:
            state = _fold_one(saga_id, stored, state)
        except IllegalTransition as exc:
            raise CorruptLogError(saga_id, stored.seq, str(exc)) from exc
    if state is None:
        raise CorruptLogError(saga_id, 0, "the log is empty")
    return state


def _fold_one(saga_id: str, stored: StoredEvent, state: SagaState | None) -> SagaState:
    event = decode(stored)
    expected = 1 if state is None else state.version + 1
    if stored.seq != expected:
        raise IllegalTransition(f"found position {stored.seq}, expected {expected}")
    if state is None:
        if not isinstance(event, SagaStarted):
            raise IllegalTransition("the log does not begin with SagaStarted")
        return start_state(saga_id, event, stored.recorded_at)
    apply(state, event, stored.recorded_at)
    return state


def describe(event: SagaEvent) -> str:
    """One human line for an event, used by logs, ``sagakit show`` and the dashboard."""
    match event:
        case SagaStarted(definition=d, definition_version=v, key=key):
            return f"started {d} v{v}" + (f" for {key}" if key else "")
        case StepRequested(step=s, attempt=a):
            return f"{s}: requested" + (f" (attempt {a})" if a > 1 else "")
        case StepSucceeded(step=s):
            return f"{s}: succeeded"
        case StepFailed(step=s, reason=r, deferred=True):
            return f"{s}: deferred ({r}) - tries again when the dependency is back"
        case StepFailed(step=s, reason=r, retryable=retryable):
            return f"{s}: failed ({r})" + (" - will retry if allowed" if retryable else "")
        case StepTimedOut(step=s, op=op, attempt=a):
            return f"{s}: {op} timed out (attempt {a})"
        case RetryScheduled(step=s, op=op, attempt=a):
            return f"{s}: {op} retry {a + 1} scheduled"
        case CompensationStarted(reason=r):
            return f"compensating because {r}"
        case CompensationRequested(step=s, attempt=a):
            return f"{s}: compensation requested" + (f" (attempt {a})" if a > 1 else "")
        case StepCompensated(step=s, null=null):
            return f"{s}: compensated" + (" (nothing to undo)" if null else "")
        case CompensationFailed(step=s, reason=r, deferred=True):
            return f"{s}: compensation deferred ({r}) - tries again when the dependency is back"
        case CompensationFailed(step=s, reason=r):
            return f"{s}: compensation failed ({r})"
        case SagaCompleted():
            return "completed"
        case SagaCompensated(reason=r):
            return f"compensated ({r})"
        case SagaNeedsAttention(reason=r):
            return f"needs attention: {r}"
        case ReplyIgnored(step=s, op=op, why=why):
            return f"{s}: {op} reply ignored ({why})"
        case StepSkipped(step=s, rule=rule):
            return f"{s}: skipped ({rule})"
        case LocksReleased(participants=ps):
            return f"semantic locks released at {', '.join(ps)}"
        case ApprovalRequested(step=s):
            return f"{s}: waiting for a person to approve"
        case OperatorIntervened(action=a, who=who, note=note, refused=refused):
            said = f" ({note})" if note else ""
            if refused:
                return f"{who} asked to {a}{said}; refused: {refused}"
            return f"{who}: {a}{said}"
    return event.event_type


Outcome = Literal["ok", "failed", "info", "undo"]


def outcome(event: SagaEvent) -> Outcome:
    """How an event reads at a glance: green, red, grey or going back."""
    if isinstance(event, StepSucceeded | SagaCompleted):
        return "ok"
    if isinstance(event, StepFailed | CompensationFailed) and event.deferred:
        return "info"  # a dependency is down, not the step: it waits, nothing failed
    if isinstance(event, StepFailed | StepTimedOut | CompensationFailed | SagaNeedsAttention):
        return "failed"
    if isinstance(
        event, CompensationStarted | CompensationRequested | StepCompensated | SagaCompensated
    ):
        return "undo"
    if isinstance(event, RetryScheduled) and event.op == "compensation":
        return "undo"  # the undoing, waiting to try again: on the way back, not forward
    return "info"
