"""What a person's word means for a saga: an operator's retry, compensate or resolve,
and an approver's answer."""

from __future__ import annotations

from sagakit.model.definition import Step, StepKind
from sagakit.model.events import OperatorIntervened, RetryScheduled, StepFailed, StepSucceeded
from sagakit.model.progress import SagaProgress
from sagakit.model.state import StepState
from sagakit.model.status import SagaStatus, StepStatus
from sagakit.model.triggers import Intervene, Signal

#: Where a step can be left when its saga needs attention, waiting for a person.
_STUCK = {
    StepStatus.FAILED,
    StepStatus.TIMED_OUT,
    StepStatus.COMPENSATING,
    StepStatus.COMPENSATION_WAIT,
}


class PersonDecider(SagaProgress):
    """Decides on an operator's intervention and on an approver's answer."""

    def on_signal(self, answer: Signal) -> None:
        pending = next(
            (
                step
                for step in self.definition.steps
                if step.kind is StepKind.APPROVAL
                and self.saga.steps.get(step.name) is not None
                and self.saga.steps[step.name].status is StepStatus.RUNNING
            ),
            None,
        )
        said = OperatorIntervened(action=answer.decision, who=answer.who, note=answer.note)
        if pending is None or self.saga.status is not SagaStatus.RUNNING:
            why = (
                f"the saga is {self.saga.status}"
                if self.saga.status.terminal
                else "no approval is pending"
            )
            self.emit(said.model_copy(update={"refused": why}))
            return
        self.emit(said)
        st = self.saga.steps[pending.name]
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
        saga = self.saga
        refused = self.refusal(ask)
        if refused is not None:
            self.emit(
                OperatorIntervened(action=ask.action, who=ask.who, note=ask.note, refused=refused)
            )
            return
        if ask.action == "resolve":
            resume = SagaStatus.RESOLVED
        elif ask.action == "compensate" or saga.undoing:
            resume = SagaStatus.COMPENSATING
        else:
            resume = SagaStatus.RUNNING
        stuck = (
            [
                step
                for step in self.definition.steps
                if saga.steps.get(step.name) and saga.steps[step.name].status in _STUCK
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
            self.resume_step(step, saga.steps[step.name])
        self.advance()

    def refusal(self, ask: Intervene) -> str | None:
        saga = self.saga
        if ask.action == "resolve":
            if saga.status is not SagaStatus.NEEDS_ATTENTION:
                return (
                    f"only a saga that needs attention can be resolved; this one is {saga.status}"
                )
            return None
        if ask.action == "retry":
            if saga.status is not SagaStatus.NEEDS_ATTENTION:
                return (
                    "only a saga that needs attention is retried by hand; "
                    f"this one is {saga.status}"
                )
            return None
        if saga.status not in {SagaStatus.RUNNING, SagaStatus.NEEDS_ATTENTION}:
            return f"the saga is {saga.status}"
        if saga.undoing:
            return (
                None if saga.status is SagaStatus.NEEDS_ATTENTION else "it is compensating already"
            )
        pivot = next((st for st in self.definition.steps if st.kind is StepKind.PIVOT), None)
        if (
            pivot is not None
            and saga.steps.get(pivot.name)
            and (saga.steps[pivot.name].status is StepStatus.SUCCEEDED)
        ):
            return f"the pivot {pivot.name} committed; this saga can only go forward"
        return None

    def resume_step(self, step: Step, st: StepState) -> None:
        """Try a stuck step again, as an operator asked."""
        if st.status in {StepStatus.FAILED, StepStatus.TIMED_OUT}:
            if self.saga.status is SagaStatus.RUNNING:
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
