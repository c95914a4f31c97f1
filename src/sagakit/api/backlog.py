"""Dead-letter depth and outbox lag over time, sampled by the admin API while it runs.

Neither leaves a history in the stores (a replayed dead letter is deleted, a sent outbox
row pruned), so the admin API reads both every few seconds and keeps a day of samples
in memory. The answer says since when it has been sampling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from sagakit.ports import DeadLetterQueue
from sagakit.stores.sql import SqlSagaStore

log = logging.getLogger("sagakit.api")

#: How long samples are kept, in seconds: the longest window a chart shows.
KEPT = 86400.0


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    dead_letters: int
    #: Per store (its URL without a password): age of the oldest unsent row, and how many.
    lag_s: dict[str, float]
    unsent: dict[str, int]


class Backlog:
    """Samples of the dead-letter depth and each store's outbox lag, newest last."""

    def __init__(
        self,
        stores: Sequence[SqlSagaStore],
        dead_letters: DeadLetterQueue | None,
        *,
        every: float = 5.0,
    ) -> None:
        if every <= 0:
            raise ValueError(f"the backlog's sampling interval must be positive, got {every}")
        self.stores = list(stores)
        self.dead_letters = dead_letters
        self.every = every
        self.samples: deque[Sample] = deque(maxlen=int(KEPT / every) + 1)
        self.since: float | None = None
        self._lock = asyncio.Lock()

    async def sample(self, now: float | None = None) -> Sample:
        """Read the depth and the lags now, and keep them."""
        async with self._lock:
            at = time.time() if now is None else now
            lag = {s.url_safe: await s.outbox_lag(at) for s in self.stores}
            unsent = {s.url_safe: await s.unsent_count() for s in self.stores}
            depth = await self.dead_letters.depth() if self.dead_letters else 0
            taken = Sample(at, depth, lag, unsent)
            self.samples.append(taken)
            if self.since is None:
                self.since = at
            return taken

    async def fresh(self) -> None:
        """Take a sample unless the newest is recent (a read of the chart does, so it
        ends at its moment even where the sampling loop does not run)."""
        newest = self.samples[-1].at if self.samples else None
        if newest is None or time.time() - newest >= self.every:
            await self.sample()

    def between(self, since: float, until: float) -> list[Sample]:
        return [s for s in self.samples if since <= s.at < until]

    async def run(self) -> None:
        """Sample every ``every`` seconds until cancelled; a failed read is logged and
        the next one tried (a store that is down for a while leaves a gap)."""
        while True:
            try:
                await self.sample()
            except Exception as exc:
                log.warning("backlog sample failed: %s", exc)
            await asyncio.sleep(self.every)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        task = asyncio.create_task(self.run(), name="sagakit-backlog")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def thin(samples: Sequence[Sample], most: int = 300) -> list[Sample]:
    """At most ``most`` samples: consecutive ones merged into their largest values (a
    spike stays visible), at the time of the last of them."""
    size = max(1, -(-len(samples) // most))
    if size == 1:
        return list(samples)
    merged = []
    for start in range(0, len(samples), size):
        chunk = samples[start : start + size]
        stores = {name for s in chunk for name in s.lag_s}
        merged.append(
            Sample(
                at=chunk[-1].at,
                dead_letters=max(s.dead_letters for s in chunk),
                lag_s={n: max(s.lag_s.get(n, 0.0) for s in chunk) for n in stores},
                unsent={n: max(s.unsent.get(n, 0) for s in chunk) for n in stores},
            )
        )
    return merged


def series(samples: Sequence[Sample]) -> dict[str, Any]:
    """The samples as chart series: times, depth, and each store's lag and unsent."""
    stores = sorted({name for s in samples for name in s.lag_s})
    return {
        "at": [s.at for s in samples],
        "dead_letters": [s.dead_letters for s in samples],
        "stores": [
            {
                "store": name,
                "lag_s": [s.lag_s.get(name) for s in samples],
                "unsent": [s.unsent.get(name) for s in samples],
            }
            for name in stores
        ],
    }
