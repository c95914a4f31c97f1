"""The overview's arithmetic: windows cut into intervals, nearest-rank percentiles, a
step's tries paired request to answer, and failures counted once per saga."""

from __future__ import annotations

import pytest

from sagakit.api.figures import (
    Span,
    failure_groups,
    percentiles,
    saga_durations,
    step_latencies,
)
from sagakit.model.events import (
    CompensationStarted,
    SagaEvent,
    SagaNeedsAttention,
    SagaStarted,
    StepRequested,
    StepSucceeded,
    StepTimedOut,
    StoredEvent,
    encode,
)


def stored(saga_id: str, seq: int, at: float, event: SagaEvent) -> StoredEvent:
    kind, version, data = encode(event)
    return StoredEvent(saga_id, seq, kind, version, data, at)


def test_a_window_ends_with_the_interval_holding_now_and_starts_on_a_multiple() -> None:
    span = Span.ending(1_000_045.0, "15m")
    assert (span.every, span.count) == (30, 30)
    assert span.until == 1_000_050.0 and span.since == 1_000_050.0 - 900
    assert span.starts()[:2] == [span.since, span.since + 30]
    assert Span.ending(1_000_045.0, "24h").every == 1800


def test_percentiles_are_values_that_were_measured() -> None:
    found = percentiles([5.0, 1.0, 3.0, 2.0, 4.0])
    assert found == {"count": 5, "p50": 3.0, "p95": 5.0, "p99": 5.0}
    hundred = percentiles([float(n) for n in range(1, 101)])
    assert (hundred["p50"], hundred["p95"], hundred["p99"]) == (50.0, 95.0, 99.0)
    assert percentiles([]) == {"count": 0, "p50": None, "p95": None, "p99": None}


def test_a_try_runs_from_its_request_to_its_own_answer() -> None:
    events = [
        stored("s", 1, 10.0, SagaStarted(definition="d", definition_version=1, data={})),
        stored("s", 2, 10.0, StepRequested(step="pay", attempt=1, message_id="m1")),
        stored("s", 3, 12.5, StepTimedOut(step="pay", op="action", attempt=1)),
        stored("s", 4, 13.0, StepRequested(step="pay", attempt=2, message_id="m2")),
        stored("s", 5, 13.25, StepSucceeded(step="pay", attempt=2)),
        # an answer whose request was not read counts nothing
        stored("t", 9, 14.0, StepSucceeded(step="pay", attempt=4)),
    ]
    assert step_latencies(reversed(events)) == {("pay", "action"): [2.5, 0.25]}
    assert saga_durations(events) == []  # s has not ended
    ended = [*events, stored("s", 6, 15.0, SagaNeedsAttention(reason="x"))]
    assert saga_durations(ended) == [5.0]


def test_failures_count_each_saga_once_by_its_latest_stop() -> None:
    events = [
        stored(
            "a",
            5,
            1.0,
            CompensationStarted(step="pay", reason="pay failed: card declined for $8.50"),
        ),
        stored(
            "b", 5, 2.0, CompensationStarted(step="pay", reason="pay failed: card declined for $12")
        ),
        stored(
            "c", 5, 3.0, CompensationStarted(step="pay", reason="pay failed: card declined for $1")
        ),
        # c's undoing then stuck: its latest stop is the one its projection shows
        stored(
            "c",
            9,
            4.0,
            SagaNeedsAttention(
                step="pay", reason="compensation of pay keeps failing (boom, 8 attempts)"
            ),
        ),
    ]
    groups = failure_groups(events)
    assert [(g["step"], g["pattern"], g["count"]) for g in groups] == [
        ("pay", "pay failed: card declined for $*", 2),
        ("pay", "compensation of pay keeps failing (boom, * attempts)", 1),
    ]
    assert groups[0]["example"] == "pay failed: card declined for $12"  # the latest
    assert failure_groups(events, limit=1) == groups[:1]


@pytest.mark.parametrize("window", ["15m", "1h", "24h"])
def test_every_window_has_a_whole_number_of_intervals(window: str) -> None:
    span = Span.ending(0.0, window)
    assert span.count * span.every == {"15m": 900, "1h": 3600, "24h": 86400}[window]
