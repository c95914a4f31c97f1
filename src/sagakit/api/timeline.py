"""One saga's timeline from its log: every try of every step and compensation as a bar
from request to answer, each retry's wait between them, the saga-level moments, and the
data each step received and gave back.

The state is folded with the log's own rules (``start_state``, ``apply``), so the input
shown for a request is the saga's data as the orchestrator sent it, and the data after a
step is what the saga held once its reply was merged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sagakit.errors import CorruptLogError
from sagakit.model.definition import SagaDefinition, StepKind
from sagakit.model.describe import describe
from sagakit.model.events import (
    ApprovalRequested,
    CompensationFailed,
    CompensationRequested,
    RetryScheduled,
    SagaEvent,
    SagaStarted,
    StepCompensated,
    StepFailed,
    StepRequested,
    StepSucceeded,
    StepTimedOut,
    StoredEvent,
    decode,
)
from sagakit.model.messages import REASON_KEY
from sagakit.model.state import SagaState
from sagakit.model.transitions import IllegalTransition, apply, start_state

Redact = Callable[[Mapping[str, Any]], dict[str, Any]]

#: Saga-level events drawn as a line across the timeline.
MARKS = {
    "SagaStarted",
    "CompensationStarted",
    "SagaCompleted",
    "SagaCompensated",
    "SagaNeedsAttention",
    "OperatorIntervened",
    "StepSkipped",
    "ReplyIgnored",
}


@dataclass(slots=True)
class Timeline:
    """What the fold of one log found; ``as_json`` is what the API answers."""

    redact: Redact
    definition: SagaDefinition | None
    bars: list[dict[str, Any]] = field(default_factory=list)
    waits: list[dict[str, Any]] = field(default_factory=list)
    marks: list[dict[str, Any]] = field(default_factory=list)
    state: SagaState | None = None
    initial: dict[str, Any] | None = None
    unreadable: str | None = None
    open_bars: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    open_waits: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def step_facts(self, step: str) -> dict[str, Any]:
        if self.definition is None or not self.definition.has_step(step):
            return {"participant": None, "kind": None}
        found = self.definition.step(step)
        return {"participant": found.participant, "kind": found.kind.value}

    def open(self, stored: StoredEvent, step: str, op: str, attempt: int) -> None:
        assert self.state is not None
        waited = self.open_waits.pop((step, op), None)
        if waited is not None:
            waited["end"] = stored.recorded_at
        sent = dict(self.state.data)
        if op == "compensation" and self.state.reason:
            sent[REASON_KEY] = self.state.reason
        bar = {
            "step": step,
            "op": op,
            "attempt": attempt,
            **self.step_facts(step),
            "start": stored.recorded_at,
            "start_seq": stored.seq,
            "end": None,
            "end_seq": None,
            "outcome": "running",
            "reason": None,
            "input": None if op == "approval" else self.redact(sent),
            "reply": None,
            "data_after": None,
        }
        self.bars.append(bar)
        self.open_bars[(step, op)] = bar

    def close(self, stored: StoredEvent, step: str, op: str, outcome: str, **facts: Any) -> None:
        bar = self.open_bars.pop((step, op), None)
        if bar is None and op == "action":  # an approval's answer closes the approval
            bar = self.open_bars.pop((step, "approval"), None)
        if bar is None:
            return
        bar.update(end=stored.recorded_at, end_seq=stored.seq, outcome=outcome, **facts)

    def wait(self, stored: StoredEvent, event: RetryScheduled) -> None:
        wait = {
            "step": event.step,
            "op": event.op,
            "attempt": event.attempt + 1,
            **self.step_facts(event.step),
            "start": stored.recorded_at,
            "due": event.due_at,
            "end": None,
        }
        self.waits.append(wait)
        self.open_waits[(event.step, event.op)] = wait

    def fold(self, stored: StoredEvent) -> SagaEvent:
        """Fold one stored event into the state, by the log's own rules."""
        event = decode(stored)
        if self.state is None:
            if not isinstance(event, SagaStarted):
                raise IllegalTransition("the log does not begin with SagaStarted")
            self.state = start_state(stored.saga_id, event, stored.recorded_at)
            self.initial = self.redact(event.data)
        else:
            apply(self.state, event, stored.recorded_at)
        return event

    def read(self, stored: StoredEvent, event: SagaEvent) -> None:
        """Draw ``event`` (already folded into the state)."""
        assert self.state is not None
        match event:
            case StepRequested(step=step, attempt=attempt):
                self.open(stored, step, "action", attempt)
            case ApprovalRequested(step=step):
                self.open(stored, step, "approval", self.state.step(step).attempt)
            case CompensationRequested(step=step, attempt=attempt):
                self.open(stored, step, "compensation", attempt)
            case StepSucceeded(step=step, data=data):
                self.close(
                    stored,
                    step,
                    "action",
                    "succeeded",
                    reply=self.redact(data),
                    data_after=self.redact(self.state.data),
                )
            case StepFailed(step=step, reason=reason, retryable=retryable, deferred=deferred):
                reply = self.redact(
                    {"reason": reason, "retryable": retryable, "deferred": deferred}
                )
                outcome = "deferred" if deferred else "failed"
                self.close(stored, step, "action", outcome, reason=reason, reply=reply)
            case StepTimedOut(step=step, op=op):
                self.close(stored, step, op, "timed_out", reason=f"{op} timed out")
            case StepCompensated(step=step, null=null):
                reply = self.redact({"null": null})
                self.close(stored, step, "compensation", "compensated", reply=reply)
            case CompensationFailed(step=step, reason=reason, deferred=deferred):
                outcome = "deferred" if deferred else "failed"
                reply = self.redact({"reason": reason, "deferred": deferred})
                self.close(stored, step, "compensation", outcome, reason=reason, reply=reply)
            case RetryScheduled():
                self.wait(stored, event)
        if stored.type in MARKS:
            self.marks.append(
                {
                    "seq": stored.seq,
                    "type": stored.type,
                    "at": stored.recorded_at,
                    "step": getattr(event, "step", None),
                    "text": describe(event),
                }
            )

    def as_json(self) -> dict[str, Any]:
        state = self.state
        pivot = None
        if self.definition is not None:
            pivot = next((s.name for s in self.definition.steps if s.kind is StepKind.PIVOT), None)
        return {
            "started_at": state.started_at if state else None,
            "ended_at": state.updated_at if state and state.status.terminal else None,
            "status": state.status.value if state else None,
            "rules_version": state.rules_version if state else None,
            "traceparent": state.traceparent if state else None,
            "pivot": pivot,
            "unreadable": self.unreadable,
            "bars": self.bars,
            "waits": self.waits,
            "marks": self.marks,
            "data": {
                "initial": self.initial,
                "final": self.redact(state.data) if state else None,
            },
        }


def timeline(
    history: Sequence[StoredEvent], definition: SagaDefinition | None, redact: Redact
) -> dict[str, Any]:
    """The timeline of the saga whose log is ``history`` (oldest first). A log that
    cannot be read is drawn up to the event that cannot, which ``unreadable`` names."""
    drawn = Timeline(redact=redact, definition=definition)
    for stored in history:
        try:
            event = drawn.fold(stored)
        except (CorruptLogError, IllegalTransition) as exc:
            drawn.unreadable = f"event {stored.seq}: {getattr(exc, 'reason', exc)}"
            break
        drawn.read(stored, event)
    return drawn.as_json()
