"""A saga's state: the fold of its log, and the snapshot that stores it.

A saga's state is never stored as the truth; it is recomputed from its events (with a
snapshot to skip the old ones).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter

from sagakit.model.status import SagaStatus, StepStatus

#: Where a step is while its saga is busy with it: the projection's current step.
_ACTIVE = frozenset(
    {
        StepStatus.RUNNING,
        StepStatus.RETRY_WAIT,
        StepStatus.COMPENSATING,
        StepStatus.COMPENSATION_WAIT,
    }
)


@dataclass(slots=True)
class StepState:
    status: StepStatus = StepStatus.PENDING
    attempt: int = 0
    compensation_attempt: int = 0
    message_id: str | None = None
    deadline: float | None = None
    retry_at: float | None = None
    #: When the outstanding request (or compensation) was made: step latency starts here.
    requested_at: float | None = None
    final_failure: bool = False
    error: str | None = None
    #: Attempts made before an operator's retry; the retry budget counts from here.
    attempt_base: int = 0
    compensation_base: int = 0

    @property
    def attempts_counted(self) -> int:
        return self.attempt - self.attempt_base

    @property
    def compensations_counted(self) -> int:
        return self.compensation_attempt - self.compensation_base


@dataclass(slots=True)
class SagaState:
    """The fold of one saga's log; ``version`` is how many events it has seen."""

    saga_id: str
    definition: str
    definition_version: int
    status: SagaStatus
    data: dict[str, Any]
    key: str | None = None
    steps: dict[str, StepState] = field(default_factory=dict)
    version: int = 0
    started_at: float = 0.0
    updated_at: float = 0.0
    reason: str | None = None
    #: True once the saga turned around to compensate (it never turns forward again).
    undoing: bool = False
    rules_version: int | None = None
    #: Participants holding semantic locks for this saga, released when it ends.
    lock_holders: list[str] = field(default_factory=list)
    traceparent: str | None = None

    def step(self, name: str) -> StepState:
        state = self.steps.get(name)
        if state is None:
            state = self.steps[name] = StepState()
        return state

    @property
    def wake_at(self) -> float | None:
        """The earliest moment something is due: a deadline or a retry."""
        times = [t for s in self.steps.values() for t in (s.deadline, s.retry_at) if t is not None]
        return min(times) if times else None

    @property
    def deadline(self) -> float | None:
        times = [s.deadline for s in self.steps.values() if s.deadline is not None]
        return min(times) if times else None

    @property
    def current_step(self) -> str | None:
        active = [name for name, s in self.steps.items() if s.status in _ACTIVE]
        return ",".join(active) if active else None


_STATE_ADAPTER: TypeAdapter[SagaState] = TypeAdapter(SagaState)

#: Bump when SagaState's shape changes; older snapshots are then ignored and logs refolded.
SNAPSHOT_SCHEMA = 3


def state_to_json(state: SagaState) -> str:
    return _STATE_ADAPTER.dump_json(state).decode()


def state_from_json(text: str) -> SagaState:
    return _STATE_ADAPTER.validate_json(text)
