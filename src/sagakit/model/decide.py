"""What a saga does next: a pure function from (definition, state, trigger) to a decision.

Nothing here touches a database, a clock or a network, so the whole policy (advance,
retry, time out, compensate in reverse, give up) can be driven by property tests. The
orchestrator loads state, calls :func:`decide`, and commits the decision in one
transaction.

The compensation rule is deliberately blunt: every compensatable step that was ever
requested, except one whose definitive answer was a business refusal, is compensated.
A step whose outcome is unknown (timed out, or overtaken by a sibling's failure) is
compensated too; the participant's barrier turns a compensation for an action that
never ran into a recorded no-op, and an action arriving after its compensation into
another, so undoing "maybe" is always safe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from sagakit.model.definition import SagaDefinition, Step, StepKind
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
from sagakit.model.messages import (
    RELEASE,
    Envelope,
    MessageKind,
    Op,
    Outgoing,
    ReplyBody,
    command_queue,
)
from sagakit.model.messages import new_id as random_id
from sagakit.model.state import SagaState, StepState
from sagakit.model.status import SagaStatus, StepStatus
from sagakit.model.transitions import apply, start_state
from sagakit.rules import RuleFailed, RuleSet


@dataclass(frozen=True, slots=True)
class Start:
    saga_id: str
    data: dict[str, Any]
    key: str | None = None
    traceparent: str | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    step: str
    op: Op
    attempt: int
    message_id: str
    body: ReplyBody
    #: Why a successful reply breaks the step's contract (see sagakit.model.contracts): the
    #: step fails at once, and is owed its compensation, since its work may be done.
    broken: str | None = None

    @classmethod
    def of(cls, envelope: Envelope) -> Reply:
        return cls(
            step=envelope.step or "",
            op=envelope.op or "action",
            attempt=envelope.attempt,
            message_id=envelope.message_id,
            body=ReplyBody.model_validate(envelope.payload),
        )


@dataclass(frozen=True, slots=True)
class Tick:
    """Time has passed: fire whatever retry or deadline is due."""


@dataclass(frozen=True, slots=True)
class Intervene:
    """A person asks the saga to ``retry`` what is stuck, to ``compensate``, or to be
    marked ``resolve``d after handling it by hand."""

    action: Literal["retry", "compensate", "resolve"]
    who: str
    note: str = ""


@dataclass(frozen=True, slots=True)
class Signal:
    """A person's answer to the saga's pending approval."""

    decision: Literal["approve", "reject"]
    who: str
    note: str = ""


Trigger = Start | Reply | Tick | Intervene | Signal

_IN_FLIGHT = {StepStatus.RUNNING, StepStatus.RETRY_WAIT, StepStatus.TIMED_OUT, StepStatus.FAILED}
#: Events that end a saga (for now or for good): its semantic locks are released first.
_ENDINGS = (SagaCompleted, SagaCompensated, SagaNeedsAttention)
#: A stage is done when every step in it is one of these.
_DONE = frozenset({StepStatus.SUCCEEDED, StepStatus.SKIPPED})
#: Where a step can be left when its saga needs attention, waiting for a person.
_STUCK = {
    StepStatus.FAILED,
    StepStatus.TIMED_OUT,
    StepStatus.COMPENSATING,
    StepStatus.COMPENSATION_WAIT,
}
_UNDOING = {StepStatus.COMPENSATING, StepStatus.COMPENSATION_WAIT}


@dataclass(slots=True)
class Decision:
    """The events to append and the commands to send, with the state they lead to."""

    state: SagaState
    expected_version: int
    events: list[SagaEvent] = field(default_factory=list)
    commands: list[Outgoing] = field(default_factory=list)
    recorded_at: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.events)


class _Decider:
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
        rules: RuleSet | None = None,
    ) -> None:
        self.timers = timers
        self.rules = rules
        self.definition = definition
        self.d = decision
        self.s = decision.state
        self.now = now
        self.new_id = new_id
        self.reply_to = reply_to
        self.causation_id = causation_id
        # Every hop joins the saga's trace; a hop with a trace of its own (a reply that
        # carried one) continues that.
        self.traceparent = traceparent or decision.state.traceparent

    def emit(self, event: SagaEvent) -> None:
        if isinstance(event, _ENDINGS) and self.s.lock_holders:
            self.release_locks()
        apply(self.s, event, self.now)
        self.d.events.append(event)

    def release_locks(self) -> None:
        """Before the saga ends, however it ends, free the records it marked as its own."""
        holders = list(self.s.lock_holders)
        self.emit(LocksReleased(participants=holders))
        for participant in holders:
            envelope = Envelope(
                message_id=self.new_id(),
                type=f"{participant}.{RELEASE}",
                kind=MessageKind.COMMAND,
                saga_id=self.s.saga_id,
                causation_id=self.causation_id,
                created_at=self.now,
                traceparent=self.traceparent,
            )
            self.d.commands.append(Outgoing(command_queue(participant), envelope))

    # ------------------------------------------------------------------ triggers

    def on_reply(self, reply: Reply) -> None:
        s = self.s
        known = self.definition.has_step(reply.step)
        st = s.steps.get(reply.step)
        why = None
        if not known:
            why = "no such step"
        elif s.status.terminal:
            why = f"saga already {s.status}"
        elif st is None:
            why = "step was never requested"
        if why is None and st is not None:
            if reply.op == "action":
                why = self.on_action_reply(self.definition.step(reply.step), st, reply)
            else:
                why = self.on_compensation_reply(self.definition.step(reply.step), st, reply)
        if why is not None:
            self.emit(
                ReplyIgnored(
                    step=reply.step,
                    op=reply.op,
                    attempt=reply.attempt,
                    ok=reply.body.ok,
                    why=why,
                    message_id=reply.message_id,
                )
            )
            return
        self.advance()

    def on_action_reply(self, step: Step, st: StepState, reply: Reply) -> str | None:
        body = reply.body
        if self.s.status is not SagaStatus.RUNNING or st.status not in _IN_FLIGHT:
            if st.status is StepStatus.SUCCEEDED:
                return "duplicate: step already succeeded"
            if st.status in _UNDOING or st.status is StepStatus.COMPENSATED:
                return "zombie: the step is being compensated"
            return f"step is {st.status} while the saga is {self.s.status}"
        locks_at = step.participant if body.locks else None
        if reply.broken is not None:
            self.emit(
                StepFailed(
                    step=step.name,
                    attempt=reply.attempt,
                    reason=reply.broken,
                    retryable=False,
                    locks_at=locks_at,
                    done=True,
                )
            )
            self.give_up(step, reply.broken, refused=False)
            return None
        if body.ok:
            self.emit(
                StepSucceeded(
                    step=step.name, attempt=reply.attempt, data=body.data, locks_at=locks_at
                )
            )
            return None
        if body.retryable and reply.attempt != st.attempt:
            return f"stale: attempt {reply.attempt} was superseded by attempt {st.attempt}"
        if body.retryable and st.status is StepStatus.RETRY_WAIT:
            # This attempt already failed or timed out, and its retry is scheduled: a
            # failure that arrives now (a handler cancelled at its timeout answers after
            # the saga's own deadline fired) must not count the same try twice.
            return f"late: attempt {reply.attempt} was already counted as failed"
        reason = body.reason or "failed"
        self.emit(
            StepFailed(
                step=step.name,
                attempt=reply.attempt,
                reason=reason,
                retryable=body.retryable,
                locks_at=locks_at,
                deferred=body.deferred,
            )
        )
        if body.deferred:
            self.retry_when_back(step, "action", st.attempt, body)
        elif body.retryable:
            self.retry_or_give_up(step, st, reason)
        else:
            self.give_up(step, reason, refused=True)
        return None

    def on_compensation_reply(self, step: Step, st: StepState, reply: Reply) -> str | None:
        if st.status not in _UNDOING:
            return f"step is {st.status}, not being compensated"
        if reply.body.ok:
            null = bool(reply.body.data.get("null_compensation"))
            self.emit(StepCompensated(step=step.name, attempt=reply.attempt, null=null))
            return None
        if reply.attempt != st.compensation_attempt or st.status is not StepStatus.COMPENSATING:
            return f"stale: compensation attempt {reply.attempt} was superseded"
        reason = reply.body.reason or "failed"
        deferred = reply.body.deferred
        self.emit(
            CompensationFailed(
                step=step.name, attempt=reply.attempt, reason=reason, deferred=deferred
            )
        )
        if deferred:
            # The undo waits for its dependency as an action does, spending no tries:
            # an outage must not turn an owed refund into a case for a person.
            self.retry_when_back(step, "compensation", st.compensation_attempt, reply.body)
        else:
            self.retry_compensation_or_escalate(step, st, reason)
        return None

    def retry_when_back(self, step: Step, op: Op, attempt: int, body: ReplyBody) -> None:
        """A dependency is down, not the step: try ``op`` again when the participant said
        it may be up (its breaker's ``retry_after``)."""
        due = self.now + max(body.retry_after or 0.0, 0.0)
        self.emit(RetryScheduled(step=step.name, op=op, attempt=attempt, due_at=due))

    def on_tick(self) -> None:
        for step in self.definition.steps:
            if self.s.status.terminal:
                break
            st = self.s.steps.get(step.name)
            if st is None:
                continue
            if st.retry_at is not None and st.retry_at <= self.now:
                if st.status is StepStatus.RETRY_WAIT and self.s.status is SagaStatus.RUNNING:
                    self.request(step, st)
                elif st.status is StepStatus.COMPENSATION_WAIT:
                    self.request_compensation(step, st)
            elif st.deadline is not None and st.deadline <= self.now:
                if st.status is StepStatus.RUNNING and self.s.status is SagaStatus.RUNNING:
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

    def on_signal(self, answer: Signal) -> None:
        pending = next(
            (
                step
                for step in self.definition.steps
                if step.kind is StepKind.APPROVAL
                and self.s.steps.get(step.name) is not None
                and self.s.steps[step.name].status is StepStatus.RUNNING
            ),
            None,
        )
        said = OperatorIntervened(action=answer.decision, who=answer.who, note=answer.note)
        if pending is None or self.s.status is not SagaStatus.RUNNING:
            why = (
                f"the saga is {self.s.status}"
                if self.s.status.terminal
                else "no approval is pending"
            )
            self.emit(said.model_copy(update={"refused": why}))
            return
        self.emit(said)
        st = self.s.steps[pending.name]
        if answer.decision == "approve":
            data = {f"{pending.name}_by": answer.who}
            self.emit(StepSucceeded(step=pending.name, attempt=st.attempt, data=data))
        else:
            reason = f"rejected by {answer.who}" + (f": {answer.note}" if answer.note else "")
            self.emit(
                StepFailed(step=pending.name, attempt=st.attempt, reason=reason, retryable=False)
            )
            self.give_up(pending, reason, refused=True)
        self.advance()

    def on_intervene(self, ask: Intervene) -> None:
        s = self.s
        refused = self.refusal(ask)
        if refused is not None:
            self.emit(
                OperatorIntervened(action=ask.action, who=ask.who, note=ask.note, refused=refused)
            )
            return
        if ask.action == "resolve":
            resume = SagaStatus.RESOLVED
        elif ask.action == "compensate" or s.undoing:
            resume = SagaStatus.COMPENSATING
        else:
            resume = SagaStatus.RUNNING
        stuck = (
            [
                step
                for step in self.definition.steps
                if s.steps.get(step.name) and s.steps[step.name].status in _STUCK
            ]
            if ask.action != "resolve"
            else []
        )
        self.emit(
            OperatorIntervened(
                action=ask.action,
                who=ask.who,
                note=ask.note,
                resume=resume,
                steps=[step.name for step in stuck],
            )
        )
        for step in stuck:
            self.resume_step(step, s.steps[step.name])
        self.advance()

    def refusal(self, ask: Intervene) -> str | None:
        s = self.s
        if ask.action == "resolve":
            if s.status is not SagaStatus.NEEDS_ATTENTION:
                return f"only a saga that needs attention can be resolved; this one is {s.status}"
            return None
        if ask.action == "retry":
            if s.status is not SagaStatus.NEEDS_ATTENTION:
                return (
                    f"only a saga that needs attention is retried by hand; this one is {s.status}"
                )
            return None
        if s.status not in {SagaStatus.RUNNING, SagaStatus.NEEDS_ATTENTION}:
            return f"the saga is {s.status}"
        if s.undoing:
            return None if s.status is SagaStatus.NEEDS_ATTENTION else "it is compensating already"
        pivot = next((st for st in self.definition.steps if st.kind is StepKind.PIVOT), None)
        if (
            pivot is not None
            and s.steps.get(pivot.name)
            and (s.steps[pivot.name].status is StepStatus.SUCCEEDED)
        ):
            return f"the pivot {pivot.name} committed; this saga can only go forward"
        return None

    def resume_step(self, step: Step, st: StepState) -> None:
        """Try a stuck step again, as an operator asked."""
        if st.status in {StepStatus.FAILED, StepStatus.TIMED_OUT}:
            if self.s.status is SagaStatus.RUNNING:
                self.emit(
                    RetryScheduled(step=step.name, op="action", attempt=st.attempt, due_at=self.now)
                )
                self.request(step, st)
        elif st.status is StepStatus.COMPENSATING:
            attempt = st.compensation_attempt
            self.emit(
                RetryScheduled(step=step.name, op="compensation", attempt=attempt, due_at=self.now)
            )
            self.request_compensation(step, st)
        elif st.status is StepStatus.COMPENSATION_WAIT:
            self.request_compensation(step, st)

    # ------------------------------------------------------------------ policy

    def retry_or_give_up(self, step: Step, st: StepState, reason: str) -> None:
        policy = step.policy
        if policy.allows_another(st.attempts_counted):
            due = self.now + policy.delay(st.attempts_counted).total_seconds()
            self.emit(RetryScheduled(step=step.name, op="action", attempt=st.attempt, due_at=due))
            return
        tries = st.attempts_counted
        plural = "attempt" if tries == 1 else "attempts"
        self.give_up(step, f"{reason} after {tries} {plural}", refused=False)

    def give_up(self, step: Step, reason: str, *, refused: bool) -> None:
        """Stop trying ``step``. ``refused`` means the participant said no for good (its
        inbox keeps that answer for every attempt); otherwise the outcome is unknown."""
        if self.s.status is not SagaStatus.RUNNING:
            return  # a sibling already turned the saga around; this step is owed its undo
        if step.kind is StepKind.RETRIABLE:
            # After the pivot nothing may be undone, and a refusal will not change its mind.
            what = "was refused" if refused else "failed"
            self.emit(SagaNeedsAttention(reason=f"{step.name} {what}: {reason}", step=step.name))
        elif step.kind is StepKind.PIVOT and not refused:
            # An earlier or redelivered attempt may still commit the pivot, and a pivot has
            # no compensation: the saga can neither finish nor undo on a guess.
            self.emit(
                SagaNeedsAttention(
                    reason=f"pivot {step.name} {reason}; its outcome is unknown", step=step.name
                )
            )
        else:
            self.emit(CompensationStarted(step=step.name, reason=f"{step.name} failed: {reason}"))

    def retry_compensation_or_escalate(self, step: Step, st: StepState, reason: str) -> None:
        policy = step.compensation_retry
        if policy.allows_another(st.compensations_counted):
            attempt = st.compensation_attempt
            due = self.now + policy.delay(st.compensations_counted).total_seconds()
            self.emit(
                RetryScheduled(step=step.name, op="compensation", attempt=attempt, due_at=due)
            )
            return
        self.emit(
            SagaNeedsAttention(
                reason=f"compensation of {step.name} keeps failing "
                f"({reason}, {st.compensations_counted} attempts)",
                step=step.name,
            )
        )

    # ------------------------------------------------------------------ progress

    def advance(self) -> None:
        if self.s.status is SagaStatus.RUNNING:
            self.advance_forward()
        elif self.s.status is SagaStatus.COMPENSATING:
            self.advance_backward()

    def advance_forward(self) -> None:
        steps = self.s.steps
        for stage in self.definition.stages:
            if _stage_done(stage, steps):
                continue
            for step in stage:
                st = steps.get(step.name)
                waiting = st is None or st.status is StepStatus.PENDING
                if waiting and not self.route(step):
                    return  # a rule could not be evaluated: the saga needs attention
            if _stage_done(stage, steps):
                continue  # every step of the stage was skipped
            return
        self.emit(SagaCompleted())

    def route(self, step: Step) -> bool:
        """Run or skip ``step`` as the saga's pinned rules say; False when they failed."""
        verdict, because = "run", "default"
        if self.rules is not None or step.optional:
            try:
                verdict, because = self.verdict(step)
            except RuleFailed as exc:
                self.emit(SagaNeedsAttention(reason=str(exc), step=step.name))
                return False
        if verdict == "skip":
            self.emit(StepSkipped(step=step.name, rule=because))
        else:
            self.request(step, self.s.step(step.name))
        return True

    def verdict(self, step: Step) -> tuple[str, str]:
        if self.rules is None:
            return "skip", "optional, and no rules are published"
        saga = {"id": self.s.saga_id, "key": self.s.key, "definition": self.s.definition}
        return self.rules.verdict(step, self.s.data, saga)

    def advance_backward(self) -> None:
        for stage in reversed(self.definition.stages):
            owed = [step for step in stage if self.owes_compensation(step)]
            if not owed:
                continue
            for step in owed:
                st = self.s.steps[step.name]
                if st.status not in _UNDOING:
                    self.request_compensation(step, st)
            return
        self.emit(SagaCompensated(reason=self.s.reason or "a step failed"))

    def owes_compensation(self, step: Step) -> bool:
        st = self.s.steps.get(step.name)
        return (
            step.kind is StepKind.COMPENSATABLE
            and st is not None
            and st.attempt > 0
            and not st.final_failure
            and st.status is not StepStatus.COMPENSATED
        )

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
            saga_id=self.s.saga_id,
            causation_id=self.causation_id,
            created_at=self.now,
            traceparent=self.traceparent,
            reply_to=self.reply_to,
            step=step.name,
            op=op,
            attempt=attempt,
            timeout=step.timeout.total_seconds(),
            payload=_payload(self.s, op),
        )
        self.d.commands.append(Outgoing(command_queue(step.participant), envelope))


def _stage_done(stage: tuple[Step, ...], steps: dict[str, StepState]) -> bool:
    for step in stage:
        st = steps.get(step.name)
        if st is None or st.status not in _DONE:
            return False
    return True


#: The payload key a compensation command carries the saga's failure reason under.
REASON_KEY = "_reason"


def _payload(state: SagaState, op: Op) -> dict[str, Any]:
    payload = dict(state.data)
    if op == "compensation" and state.reason:
        payload[REASON_KEY] = state.reason
    return payload


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
    rules: RuleSet | None = None,
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
    decider = _Decider(
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
    decider = _Decider(
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
    return decider.d.commands
