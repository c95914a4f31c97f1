"""Tools for testing sagas: a harness with an in-memory runtime, a clock that jumps, and
seeded message faults (drop, duplicate, delay, reorder)."""

from sagakit.clock import FakeClock
from sagakit.testing.checks import check_log, forward_only
from sagakit.testing.faults import FaultCounts, Faults, FaultyTransport
from sagakit.testing.harness import SagaHarness

__all__ = [
    "FakeClock",
    "FaultCounts",
    "Faults",
    "FaultyTransport",
    "SagaHarness",
    "check_log",
    "forward_only",
]
