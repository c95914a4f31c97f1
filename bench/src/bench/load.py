"""Load generators: a closed loop (N users, each waits for its saga) and an open loop
(sagas started at a fixed rate whatever happens, so latency is measured honestly)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from bench import workload


class Harness(Protocol):
    """One system under test, inside the worker process."""

    #: Transactions the harness ran only to watch (polls): left out of commits per saga.
    observer_transactions: int

    async def open(self, *, recover: bool) -> None:
        """Start the system; with ``recover``, after a crash, with its own recovery."""
        ...

    async def submit(self, order: workload.Order) -> str:
        """Run the order's saga to its end; return ``approved`` or ``rejected``."""
        ...

    async def quiesce(self, timeout: float) -> int:
        """Wait until no saga is unfinished in the system; return how many still are."""
        ...

    async def close(self) -> None: ...


@dataclass(slots=True)
class LoadResult:
    latencies: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    first_error: str | None = None
    elapsed: float = 0.0
    started: int = 0

    @property
    def completed(self) -> int:
        return len(self.latencies)

    def as_dict(self) -> dict[str, Any]:
        return {
            "latencies": self.latencies,
            "outcomes": dict(self.outcomes),
            "errors": self.errors,
            "first_error": self.first_error,
            "elapsed": self.elapsed,
            "started": self.started,
            "completed": self.completed,
        }


class _Orders:
    """Order ids handed out in turn from a budget, planned before the clock starts (the
    plan's seeded generator is not the system's work, and cost a tenth of a fast one's
    CPU when it was made order by order inside the measured window)."""

    def __init__(self, seed: int, first: int, budget: int) -> None:
        self.planned = deque(workload.plan(seed, i) for i in range(first, first + budget))

    def take(self) -> workload.Order | None:
        return self.planned.popleft() if self.planned else None


_prepared: dict[tuple[int, int, int], _Orders] = {}


def prepare(seed: int, first: int, budget: int) -> None:
    """Plan a run's orders now, before its measured window opens."""
    _prepared[(seed, first, budget)] = _Orders(seed, first, budget)


def _orders(seed: int, first: int, budget: int) -> _Orders:
    return _prepared.pop((seed, first, budget), None) or _Orders(seed, first, budget)


async def _one(harness: Harness, order: workload.Order, since: float, result: LoadResult) -> None:
    result.started += 1
    try:
        outcome = await harness.submit(order)
    except Exception as exc:  # a failed saga is counted, and the run goes on
        result.errors += 1
        result.first_error = result.first_error or f"{type(exc).__name__}: {exc}"
        return
    result.latencies.append(time.perf_counter() - since)
    result.outcomes[outcome] += 1


async def closed_loop(
    harness: Harness,
    *,
    seed: int,
    first: int,
    budget: int,
    concurrency: int,
    duration: float,
) -> LoadResult:
    """``concurrency`` users each start a saga, wait for its end, and start the next,
    until ``duration`` has passed or the budget of orders is spent."""
    orders = _orders(seed, first, budget)
    result = LoadResult()
    start = time.perf_counter()
    deadline = start + duration

    async def user() -> None:
        while time.perf_counter() < deadline:
            order = orders.take()
            if order is None:
                return
            await _one(harness, order, time.perf_counter(), result)

    await asyncio.gather(*(user() for _ in range(concurrency)))
    result.elapsed = time.perf_counter() - start
    return result


async def open_loop(
    harness: Harness, *, seed: int, first: int, budget: int, rate: float, duration: float
) -> LoadResult:
    """Start a saga every ``1/rate`` seconds for ``duration``; each latency counts from
    the moment its saga was due to start, so a system that falls behind is charged for
    the queue it builds (no coordinated omission)."""
    orders = _orders(seed, first, budget)
    result = LoadResult()
    start = time.perf_counter()
    tasks: list[asyncio.Task[None]] = []
    for i in range(int(rate * duration)):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        order = orders.take()
        if order is None:
            break
        tasks.append(asyncio.create_task(_one(harness, order, due, result)))
    await asyncio.gather(*tasks)
    result.elapsed = time.perf_counter() - start
    return result
