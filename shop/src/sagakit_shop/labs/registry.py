"""The labs, by number: what each replays, and the coroutine that runs it.

Every lab's ``run(directory, *, story)`` works in its own fresh directory, tells the
story when ``story`` is set, and returns its key figures as one JSON-ready dict. The
dict's ``problems`` lists, in words, every way the run departed from the lesson (empty
when the lesson held).
"""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sagakit_shop.labs import (
    compensation,
    dashboard_timeline,
    event_log,
    happy_path,
    idempotent_consumer,
    outbox,
    overbooked_flight,
    routing,
    state_table,
    timeouts,
)


class LabRun(Protocol):
    def __call__(self, directory: Path, *, story: bool) -> Coroutine[Any, Any, dict[str, Any]]: ...


@dataclass(frozen=True, slots=True)
class Lab:
    number: int
    title: str
    lesson: str
    run: LabRun
    saga_log: bool = True  # whether its sagas are left in saga.db to inspect


LABS: dict[int, Lab] = {
    lab.number: lab
    for lab in (
        Lab(1, happy_path.TITLE, happy_path.LESSON, happy_path.run),
        Lab(2, compensation.TITLE, compensation.LESSON, compensation.run),
        Lab(3, state_table.TITLE, state_table.LESSON, state_table.run),
        Lab(
            4,
            idempotent_consumer.TITLE,
            idempotent_consumer.LESSON,
            idempotent_consumer.run,
            saga_log=False,  # it plays the orchestrator's part itself: no saga log
        ),
        Lab(5, outbox.TITLE, outbox.LESSON, outbox.run),
        Lab(6, event_log.TITLE, event_log.LESSON, event_log.run),
        Lab(7, timeouts.TITLE, timeouts.LESSON, timeouts.run),
        Lab(8, overbooked_flight.TITLE, overbooked_flight.LESSON, overbooked_flight.run),
        Lab(9, dashboard_timeline.TITLE, dashboard_timeline.LESSON, dashboard_timeline.run),
        Lab(10, routing.TITLE, routing.LESSON, routing.run),
    )
}
