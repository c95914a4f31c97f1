"""Moving a saga on, and what a failed try leads to: the policy half of ``decide``.

The compensation rule is deliberately blunt: every compensatable step that was ever
requested, except one whose definitive answer was a business refusal, is compensated.
A step whose outcome is unknown (timed out, or overtaken by a sibling's failure) is
compensated too; the participant's barrier turns a compensation for an action that
never ran into a recorded no-op, and an action arriving after its compensation into
another, so undoing "maybe" is always safe.
"""

from __future__ import annotations

from sagakit.model.definition import Step, StepKind
from sagakit.model.events import (
    CompensationStarted,
    RetryScheduled,
    SagaCompensated,
    SagaCompleted,
    SagaNeedsAttention,
    StepSkipped,
)
from sagakit.model.messages import Op, ReplyBody
from sagakit.model.routing import RuleFailed
from sagakit.model.state import StepState
from sagakit.model.status import UNDOING, SagaStatus, StepStatus
from sagakit.model.writer import DecisionWriter

#: A stage is done when every step in it is one of these.
_DONE = frozenset({StepStatus.SUCCEEDED, StepStatus.SKIPPED})


class SagaProgress(DecisionWriter):
    """Moving a saga on: forward stage by stage, or backward through what it owes; and
    what a failed try leads to (another try, compensation, or a person)."""

    def advance(self) -> None:
        if self.saga.status is SagaStatus.RUNNING:
            self.advance_forward()
        elif self.saga.status is SagaStatus.COMPENSATING:
            self.advance_backward()

    def advance_forward(self) -> None:
        steps = self.saga.steps
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
            self.request(step, self.saga.step(step.name))
        return True

    def verdict(self, step: Step) -> tuple[str, str]:
        if self.rules is None:
            return "skip", "optional, and no rules are published"
        saga = {"id": self.saga.saga_id, "key": self.saga.key, "definition": self.saga.definition}
        return self.rules.verdict(step, self.saga.data, saga)

    def advance_backward(self) -> None:
        for stage in reversed(self.definition.stages):
            owed = [step for step in stage if self.owes_compensation(step)]
            if not owed:
                continue
            for step in owed:
                st = self.saga.steps[step.name]
                if st.status not in UNDOING:
                    self.request_compensation(step, st)
            return
        self.emit(SagaCompensated(reason=self.saga.reason or "a step failed"))

    def owes_compensation(self, step: Step) -> bool:
        st = self.saga.steps.get(step.name)
        return (
            step.kind is StepKind.COMPENSATABLE
            and st is not None
            and st.attempt > 0
            and not st.final_failure
            and st.status is not StepStatus.COMPENSATED
        )

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
        if self.saga.status is not SagaStatus.RUNNING:
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

    def retry_when_back(self, step: Step, op: Op, attempt: int, body: ReplyBody) -> None:
        """A dependency is down, not the step: try ``op`` again when the participant said
        it may be up (its breaker's ``retry_after``)."""
        due = self.now + max(body.retry_after or 0.0, 0.0)
        self.emit(RetryScheduled(step=step.name, op=op, attempt=attempt, due_at=due))


def _stage_done(stage: tuple[Step, ...], steps: dict[str, StepState]) -> bool:
    for step in stage:
        st = steps.get(step.name)
        if st is None or st.status not in _DONE:
            return False
    return True
