"""What a saga does next: a pure function from (definition, state, trigger) to a decision.

Nothing here touches a database, a clock or a network, so the whole policy (advance,
retry, time out, compensate in reverse, give up) can be driven by property tests. The
orchestrator loads state, calls :func:`decide`, and commits the decision in one
transaction.

The rules are split by what they answer to: ``progress`` (moving on, retrying, giving
up, compensating), ``replies`` (a participant's answer), ``interventions`` (a person's),
and here, time passing; ``writer`` records the events and commands they decide on.
"""

from __future__ import annotations

from collections.abc import Callable

from sagakit.model.decision import Decision
from sagakit.model.definition import SagaDefinition, Step, StepKind
from sagakit.model.events import (
    SagaNeedsAttention,
    SagaStarted,
    StepFailed,
    StepSucceeded,
    StepTimedOut,
)
from sagakit.model.interventions import PersonDecider
from sagakit.model.messages import Outgoing
from sagakit.model.messages import new_id as random_id
from sagakit.model.replies import ReplyDecider
from sagakit.model.routing import Routing
from sagakit.model.state import SagaState, StepState
from sagakit.model.status import SagaStatus, StepStatus
from sagakit.model.transitions import start_state
from sagakit.model.triggers import Intervene, Reply, Signal, Start, Tick, Trigger


class Decider(ReplyDecider, PersonDecider):
    """Every rule of ``decide``, over one decision; time passing is decided here."""

    def on_tick(self) -> None:
        for step in self.definition.steps:
            if self.saga.status.terminal:
                break
            st = self.saga.steps.get(step.name)
            if st is None:
                continue
            if st.retry_at is not None and st.retry_at <= self.now:
                if st.status is StepStatus.RETRY_WAIT and self.saga.status is SagaStatus.RUNNING:
                    self.request(step, st)
                elif st.status is StepStatus.COMPENSATION_WAIT:
                    self.request_compensation(step, st)
            elif st.deadline is not None and st.deadline <= self.now:
                if st.status is StepStatus.RUNNING and self.saga.status is SagaStatus.RUNNING:
                    self.emit(StepTimedOut(step=step.name, op="action", attempt=st.attempt))
                    if step.kind is StepKind.APPROVAL:
                        self.approval_expired(step, st)
                    else:
                        self.retry_or_give_up(step, st, "timed out")
                elif st.status is StepStatus.COMPENSATING:
                    attempt = st.compensation_attempt
                    self.emit(StepTimedOut(step=step.name, op="compensation", attempt=attempt))
                    self.retry_compensation_or_escalate(step, st, "compensation timed out")
        self.advance()

    def approval_expired(self, step: Step, st: StepState) -> None:
        waited = f"no answer within {step.timeout}"
        if step.on_timeout == "approve":
            self.emit(
                StepSucceeded(step=step.name, attempt=st.attempt, data={"approved_by": "timeout"})
            )
        elif step.on_timeout == "needs_attention":
            self.emit(SagaNeedsAttention(reason=f"{step.name}: {waited}", step=step.name))
        else:
            self.emit(
                StepFailed(step=step.name, attempt=st.attempt, reason=waited, retryable=False)
            )
            self.give_up(step, waited, refused=True)


def decide(
    definition: SagaDefinition,
    state: SagaState | None,
    trigger: Trigger,
    *,
    now: float,
    reply_to: str,
    new_id: Callable[[], str] = random_id,
    traceparent: str | None = None,
    timers: bool = True,
    rules: Routing | None = None,
) -> Decision:
    """Work out what ``trigger`` means for the saga in ``state``; ``state`` is updated in place.

    ``state`` is None only for :class:`Start`. The returned decision's events, folded
    onto the state the caller loaded, give ``decision.state``. With ``timers`` off (the
    choreography tracker, which cannot resend anything) steps get no deadlines.
    """
    causation = trigger.message_id if isinstance(trigger, Reply) else None
    if isinstance(trigger, Start):
        if state is not None:
            raise ValueError(f"saga {trigger.saga_id} already exists")
        started = SagaStarted(
            definition=definition.name,
            definition_version=definition.version,
            data=dict(trigger.data),
            key=trigger.key,
            rules_version=rules.version if rules is not None else None,
            traceparent=traceparent or trigger.traceparent,
        )
        state = start_state(trigger.saga_id, started, now)
        decision = Decision(state=state, expected_version=0, events=[started], recorded_at=now)
        traceparent = traceparent or trigger.traceparent
    else:
        if state is None:
            raise ValueError("only Start may decide without a state")
        decision = Decision(state=state, expected_version=state.version, recorded_at=now)
    decider = Decider(
        definition,
        decision,
        now=now,
        new_id=new_id,
        reply_to=reply_to,
        causation_id=causation,
        traceparent=traceparent,
        timers=timers,
        rules=rules,
    )
    match trigger:
        case Start():
            decider.advance()
        case Reply():
            decider.on_reply(trigger)
        case Tick():
            decider.on_tick()
        case Intervene():
            decider.on_intervene(trigger)
        case Signal():
            decider.on_signal(trigger)
    return decision


def outstanding(
    definition: SagaDefinition, state: SagaState, *, now: float, reply_to: str
) -> list[Outgoing]:
    """The commands ``state`` is waiting on, rebuilt from its log: one for each step whose
    action or compensation was requested and not yet answered (approvals excepted, a
    person answers those).

    Each carries the message id and attempt its request event recorded, so a reply to it
    is the reply to the original; its payload is the saga's data now. The fused runtime
    runs its own steps' commands from memory and recovers them through this after a
    restart, instead of keeping an outbox row for each.
    """
    if state.status.terminal:
        return []
    decider = Decider(
        definition,
        Decision(state=state, expected_version=state.version),
        now=now,
        new_id=random_id,
        reply_to=reply_to,
        causation_id=None,
        traceparent=None,
        timers=True,
        rules=None,
    )
    for step in definition.steps:
        st = state.steps.get(step.name)
        if st is None or st.message_id is None or step.kind is StepKind.APPROVAL:
            continue
        if st.status is StepStatus.RUNNING:
            decider.send(step, step.command, "action", st.attempt, st.message_id)
        elif st.status is StepStatus.COMPENSATING and st.deadline is not None:
            # Without a deadline, a compensation that failed or timed out waits for its
            # retry (the timer's), not for an answer.
            assert step.compensation is not None  # guaranteed by definition validation
            attempt = st.compensation_attempt
            decider.send(step, step.compensation, "compensation", attempt, st.message_id)
    return decider.decision.commands
