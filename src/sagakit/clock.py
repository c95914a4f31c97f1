"""Clocks: the system's, and one that tests can move by hand."""

from __future__ import annotations

import time
from datetime import timedelta


class SystemClock:
    """Wall-clock seconds since the epoch."""

    def now(self) -> float:
        return time.time()


class FakeClock:
    """A clock that stands still until told to jump; for tests and the testing harness."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, by: timedelta | float) -> None:
        seconds = by.total_seconds() if isinstance(by, timedelta) else by
        if seconds < 0:
            raise ValueError("a clock only moves forward")
        self._now += seconds
