"""How an event moves a saga and its steps: the transition tables, and the fold.

``apply`` refuses any event that would move a saga or a step backwards, so every log
that loads is a forward-only history.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sagakit.errors import CorruptLogError, SagaError
from sagakit.model.events import (
    ApprovalRequested,
    CompensationFailed,
    CompensationRequested,
    LocksReleased,
    OperatorIntervened,
    ReplyIgnored,
    RetryScheduled,
    SagaEvent,
    SagaStarted,
    StepCompensated,
    StepFailed,
    StepRequested,
    StepSkipped,
    StepSucceeded,
    StepTimedOut,
    StoredEvent,
    decode,
)
from sagakit.model.state import SagaState, StepState
from sagakit.model.status import SagaStatus, StepStatus


class IllegalTransition(SagaError):
    """An event would move a saga or step somewhere it may not go from where it is."""


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
