"""A decision: the events to append and the commands to send, with the state they lead to."""

from __future__ import annotations

from dataclasses import dataclass, field

from sagakit.model.events import SagaEvent
from sagakit.model.messages import Outgoing
from sagakit.model.state import SagaState


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


def merge_decisions(first: Decision | None, later: Decision) -> Decision:
    """``later`` (a decision on the same saga, taken after ``first``) added onto ``first``:
    one decision to append, holding both's events and commands, in order."""
    if first is None:
        return later
    first.events.extend(later.events)
    first.commands.extend(later.commands)
    first.state = later.state
    return first
