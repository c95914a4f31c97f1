"""The overview's figures, worked out from what the saga store read: windows and their
intervals, latency percentiles, and failure reasons grouped by pattern."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sagakit.errors import CorruptLogError
from sagakit.model.events import (
    CompensationFailed,
    CompensationRequested,
    SagaEvent,
    StepCompensated,
    StepFailed,
    StepRequested,
    StepSucceeded,
    StepTimedOut,
    StoredEvent,
    decode,
)

Window = Literal["15m", "1h", "24h"]
#: Each window's length and the interval its charts count in, in seconds.
WINDOWS: dict[str, tuple[int, int]] = {"15m": (900, 30), "1h": (3600, 60), "24h": (86400, 1800)}

#: The log events a saga's outcome chart counts, and what each is called there.
OUTCOMES = {
    "SagaStarted": "started",
    "SagaCompleted": "completed",
    "SagaCompensated": "compensated",
    "SagaNeedsAttention": "needs_attention",
}

#: The events that open and close a step's try (latency runs from one to the other).
LATENCY_EVENTS = (
    "StepRequested",
    "StepSucceeded",
    "StepFailed",
    "StepTimedOut",
    "CompensationRequested",
    "StepCompensated",
    "CompensationFailed",
)
ENDS = ("SagaStarted", "SagaCompleted", "SagaCompensated", "SagaNeedsAttention")
PERCENTILES = (50, 95, 99)


@dataclass(frozen=True, slots=True)
class Span:
    """A window cut into equal intervals: ``count`` of ``every`` seconds from ``since``."""

    since: float
    every: int
    count: int

    @property
    def until(self) -> float:
        return self.since + self.every * self.count

    @classmethod
    def ending(cls, now: float, window: str) -> Span:
        """The window that ends with the interval holding ``now``; intervals start at
        multiples of their length, so a chart's bars stay put between two reads."""
        length, every = WINDOWS[window]
        count = length // every
        end = (math.floor(now / every) + 1) * every
        return cls(since=end - count * every, every=every, count=count)

    def starts(self) -> list[float]:
        return [self.since + i * self.every for i in range(self.count)]


def percentiles(values: Sequence[float]) -> dict[str, float | int | None]:
    """p50, p95 and p99 by nearest rank (a value that was measured), and the count."""
    ordered = sorted(values)
    found: dict[str, float | int | None] = {"count": len(ordered)}
    for p in PERCENTILES:
        found[f"p{p}"] = ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] if ordered else None
    return found


def _decoded(stored: Iterable[StoredEvent]) -> list[tuple[StoredEvent, SagaEvent]]:
    events = []
    for item in stored:
        try:
            events.append((item, decode(item)))
        except CorruptLogError:
            continue  # an unreadable event is in the saga's own view, not in a figure
    return events


def step_latencies(stored: Iterable[StoredEvent]) -> dict[tuple[str, str], list[float]]:
    """Seconds from each request of a step (or of its compensation) to its answer, by
    (step, "action" or "compensation"). A try whose request or answer is outside what
    was read is left out."""
    opened: dict[tuple[str, str, str, int], float] = {}
    found: dict[tuple[str, str], list[float]] = {}
    for item, event in sorted(
        _decoded(stored), key=lambda pair: (pair[0].recorded_at, pair[0].seq)
    ):
        match event:
            case StepRequested(step=step, attempt=attempt):
                opened[(item.saga_id, step, "action", attempt)] = item.recorded_at
                continue
            case CompensationRequested(step=step, attempt=attempt):
                opened[(item.saga_id, step, "compensation", attempt)] = item.recorded_at
                continue
            case StepSucceeded(step=step, attempt=attempt) | StepFailed(step=step, attempt=attempt):
                key = (item.saga_id, step, "action", attempt)
            case StepTimedOut(step=step, op=op, attempt=attempt):
                key = (item.saga_id, step, op, attempt)
            case (
                StepCompensated(step=step, attempt=attempt)
                | CompensationFailed(step=step, attempt=attempt)
            ):
                key = (item.saga_id, step, "compensation", attempt)
            case _:
                continue
        began = opened.pop(key, None)
        if began is not None:
            found.setdefault((key[1], key[2]), []).append(item.recorded_at - began)
    return found


def saga_durations(stored: Iterable[StoredEvent]) -> list[float]:
    """Seconds from start to end of each saga whose start and end were both read."""
    started: dict[str, float] = {}
    ended: dict[str, float] = {}
    for item in stored:
        if item.type == "SagaStarted":
            started[item.saga_id] = item.recorded_at
        elif item.type in ENDS:
            ended[item.saga_id] = max(ended.get(item.saga_id, 0.0), item.recorded_at)
    return [ended[s] - started[s] for s in ended if s in started]


# ---------------------------------------------------------------------- failure reasons

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_TOKEN = re.compile(r"\b[0-9a-f]{8,}\b|\b[\w.-]+_[0-9a-f]{8,}\b", re.IGNORECASE)
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def reason_pattern(reason: str) -> str:
    """The reason with what differs between sagas (ids, numbers, quoted values) made
    ``*``, so that "card declined for $8.50" and "... $12.00" are one pattern."""
    text = _QUOTED.sub("*", reason)
    text = _TOKEN.sub("*", text)
    text = _NUMBER.sub("*", text)
    return re.sub(r"\*(?:\W?\*)+", "*", text)


def failure_groups(stored: Iterable[StoredEvent], *, limit: int = 10) -> list[dict[str, Any]]:
    """Sagas that turned back or asked for a person, grouped by the step they stopped
    at and their reason's pattern, most first. Each saga counts once, by its latest
    such event (whose reason is the one its projection shows)."""
    latest: dict[str, tuple[str | None, str, float]] = {}
    for item, event in sorted(_decoded(stored), key=lambda pair: pair[0].recorded_at):
        reason = getattr(event, "reason", None)
        if reason is not None:
            latest[item.saga_id] = (getattr(event, "step", None), reason, item.recorded_at)
    groups: dict[tuple[str | None, str], dict[str, Any]] = {}
    for step, reason, at in latest.values():
        pattern = reason_pattern(reason)
        group = groups.setdefault(
            (step, pattern),
            {"step": step, "pattern": pattern, "example": reason, "count": 0, "last_at": at},
        )
        group["count"] += 1
        if at >= group["last_at"]:
            group["example"], group["last_at"] = reason, at
    ranked = sorted(groups.values(), key=lambda g: (-g["count"], -g["last_at"], g["pattern"]))
    return ranked[:limit]
