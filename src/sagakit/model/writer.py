"""The part of deciding that writes: events folded into the saga's state as they are
emitted, and the commands they send."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sagakit.model.decision import Decision
from sagakit.model.definition import SagaDefinition, Step, StepKind
from sagakit.model.events import (
    ApprovalRequested,
    CompensationRequested,
    LocksReleased,
    SagaCompensated,
    SagaCompleted,
    SagaEvent,
    SagaNeedsAttention,
    StepRequested,
)
from sagakit.model.messages import (
    REASON_KEY,
    RELEASE,
    Envelope,
    MessageKind,
    Op,
    Outgoing,
    command_queue,
)
from sagakit.model.routing import Routing
from sagakit.model.state import SagaState, StepState
from sagakit.model.transitions import apply

#: Events that end a saga (for now or for good): its semantic locks are released first.
_ENDINGS = (SagaCompleted, SagaCompensated, SagaNeedsAttention)


class DecisionWriter:
    """Holds what one decision is about (the definition, the saga's state, the moment)
    and records into it: each event is folded into the state as it is emitted, and each
    command is built with the hop's ids and trace."""

    def __init__(
        self,
        definition: SagaDefinition,
        decision: Decision,
        *,
        now: float,
        new_id: Callable[[], str],
        reply_to: str,
        causation_id: str | None,
        traceparent: str | None,
        timers: bool = True,
        rules: Routing | None = None,
    ) -> None:
        self.timers = timers
        self.rules = rules
        self.definition = definition
        self.decision = decision
        self.saga = decision.state
        self.now = now
        self.new_id = new_id
        self.reply_to = reply_to
        self.causation_id = causation_id
        # Every hop joins the saga's trace; a hop with a trace of its own (a reply that
        # carried one) continues that.
        self.traceparent = traceparent or decision.state.traceparent

    def emit(self, event: SagaEvent) -> None:
        if isinstance(event, _ENDINGS) and self.saga.lock_holders:
            self.release_locks()
        apply(self.saga, event, self.now)
        self.decision.events.append(event)

    def release_locks(self) -> None:
        """Before the saga ends, however it ends, free the records it marked as its own."""
        holders = list(self.saga.lock_holders)
        self.emit(LocksReleased(participants=holders))
        for participant in holders:
            envelope = Envelope(
                message_id=self.new_id(),
                type=f"{participant}.{RELEASE}",
                kind=MessageKind.COMMAND,
                saga_id=self.saga.saga_id,
                causation_id=self.causation_id,
                created_at=self.now,
                traceparent=self.traceparent,
            )
            self.decision.commands.append(Outgoing(command_queue(participant), envelope))

    def request(self, step: Step, st: StepState) -> None:
        deadline = self.now + step.timeout.total_seconds() if self.timers else None
        if step.kind is StepKind.APPROVAL:
            self.emit(ApprovalRequested(step=step.name, deadline=deadline))
            return  # no command: the saga waits for a person's signal
        attempt = st.attempt + 1
        message_id = self.new_id()
        self.emit(
            StepRequested(step=step.name, attempt=attempt, message_id=message_id, deadline=deadline)
        )
        self.send(step, step.command, "action", attempt, message_id)

    def request_compensation(self, step: Step, st: StepState) -> None:
        attempt = st.compensation_attempt + 1
        message_id = self.new_id()
        deadline = self.now + step.timeout.total_seconds() if self.timers else None
        self.emit(
            CompensationRequested(
                step=step.name, attempt=attempt, message_id=message_id, deadline=deadline
            )
        )
        assert step.compensation is not None  # guaranteed by definition validation
        self.send(step, step.compensation, "compensation", attempt, message_id)

    def send(self, step: Step, command: str, op: Op, attempt: int, message_id: str) -> None:
        envelope = Envelope(
            message_id=message_id,
            type=f"{step.participant}.{command}",
            kind=MessageKind.COMMAND,
            saga_id=self.saga.saga_id,
            causation_id=self.causation_id,
            created_at=self.now,
            traceparent=self.traceparent,
            reply_to=self.reply_to,
            step=step.name,
            op=op,
            attempt=attempt,
            timeout=step.timeout.total_seconds(),
            payload=_payload(self.saga, op),
        )
        self.decision.commands.append(Outgoing(command_queue(step.participant), envelope))


def _payload(state: SagaState, op: Op) -> dict[str, Any]:
    payload = dict(state.data)
    if op == "compensation" and state.reason:
        payload[REASON_KEY] = state.reason
    return payload
