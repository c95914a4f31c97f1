"""Where a saga is, and where each of its steps is: the statuses its log's fold moves
through."""

from __future__ import annotations

from enum import StrEnum


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

    def __repr__(self) -> str:
        # A status is the string it compares equal to; a dict of outcomes prints as one.
        return repr(self.value)


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


#: Where a step is while it is being undone.
UNDOING = {StepStatus.COMPENSATING, StepStatus.COMPENSATION_WAIT}
