"""Whether an orchestrator is alive for a store: a heartbeat row per running process.

An orchestrator's timer loop beats (at most every ``EVERY`` seconds) in the same
transaction as its look for due timers, so a process that fires timers is a process
that beats. A person's action (``sagakit retry``, the dashboard's buttons) is a message
the orchestrator must take; :func:`alive` tells the CLI whether anyone is there to take
it. Beats are wall-clock time (an orchestrator on a test's fake clock still beats in
real time); hosts' clocks must agree within ``STALE`` seconds.
"""

from __future__ import annotations

import os
import socket
import time

from sagakit.ports import HeartbeatRecords, UnitOfWork

#: How often a running orchestrator beats, in seconds.
EVERY = 5.0
#: A beat older than this says nothing is running any more.
STALE = 3 * EVERY


class Heartbeat:
    """One process's beat for one orchestrator group."""

    def __init__(self, group: str, *, every: float = EVERY) -> None:
        self.group = group
        self.member = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.every = every
        self._last = float("-inf")

    async def beat(self, records: HeartbeatRecords) -> None:
        """Record that this orchestrator runs (a no-op within ``every`` of the last)."""
        now = time.time()
        moment = time.monotonic()
        if moment - self._last < self.every:
            return
        self._last = moment
        await records.beat(self.group, self.member, at=now, forget_before=now - 86400)


async def last_beat(unit: UnitOfWork, group: str) -> float | None:
    """The newest beat of ``group`` in ``unit``'s store (wall-clock time), or None."""
    return await unit.records.heartbeats.newest(group)


def alive(last: float | None, now: float | None = None, *, stale: float = STALE) -> bool:
    """Whether a beat at ``last`` says an orchestrator runs at ``now`` (wall clock)."""
    return last is not None and (time.time() if now is None else now) - last <= stale
