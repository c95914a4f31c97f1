"""What a participant's reply means for its saga: a success, a failure to retry or to
give up on, or a reply that changes nothing (a duplicate, a stale try, a zombie)."""

from __future__ import annotations

from sagakit.model.definition import Step
from sagakit.model.events import (
    CompensationFailed,
    ReplyIgnored,
    StepCompensated,
    StepFailed,
    StepSucceeded,
)
from sagakit.model.progress import SagaProgress
from sagakit.model.state import StepState
from sagakit.model.status import UNDOING, SagaStatus, StepStatus
from sagakit.model.triggers import Reply

_IN_FLIGHT = {StepStatus.RUNNING, StepStatus.RETRY_WAIT, StepStatus.TIMED_OUT, StepStatus.FAILED}


class ReplyDecider(SagaProgress):
    """Decides on a participant's reply to an action or a compensation."""

    def on_reply(self, reply: Reply) -> None:
        saga = self.saga
        known = self.definition.has_step(reply.step)
        st = saga.steps.get(reply.step)
        why = None
        if not known:
            why = "no such step"
        elif saga.status.terminal:
            why = f"saga already {saga.status}"
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
        if self.saga.status is not SagaStatus.RUNNING or st.status not in _IN_FLIGHT:
            if st.status is StepStatus.SUCCEEDED:
                return "duplicate: step already succeeded"
            if st.status in UNDOING or st.status is StepStatus.COMPENSATED:
                return "zombie: the step is being compensated"
            return f"step is {st.status} while the saga is {self.saga.status}"
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
        if st.status not in UNDOING:
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
