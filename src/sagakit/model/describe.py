"""How an event reads to a person: one line, and a colour at a glance."""

from __future__ import annotations

from typing import Literal

from sagakit.model.events import (
    ApprovalRequested,
    CompensationFailed,
    CompensationRequested,
    CompensationStarted,
    LocksReleased,
    OperatorIntervened,
    ReplyIgnored,
    RetryScheduled,
    SagaCompensated,
    SagaCompleted,
    SagaEvent,
    SagaNeedsAttention,
    SagaStarted,
    StepCompensated,
    StepFailed,
    StepRequested,
    StepSkipped,
    StepSucceeded,
    StepTimedOut,
)


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
