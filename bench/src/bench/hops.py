"""Where a saga's time goes: ``python -m bench.hops`` runs sagas one at a time on the
ordinary ``Runtime`` (PostgreSQL store, in-process transport, a relay) and prints the
latency percentiles and a breakdown of every hop from timestamps.

A hop is one message: the transaction that wrote it to the outbox commits, something
publishes it (the relay, after waking and claiming it, or the committing process
itself), the consumer's handler is called, opens its transaction, and commits the next
message. Each stage is the time between two of those moments, over every hop of every
saga; the stages of one hop add up to its length.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

from bench import databases, workload
from bench.systems.sagakit_app import ORDER, Watched, participants
from sagakit import Orchestrator, Runtime, open_store
from sagakit.ports import BatchHandler, Delivery, PublishResult, SagaStore, UnitOfWork
from sagakit.transports.memory import MemoryTransport

#: The moments a hop passes, in order, and the stage each one closes.
STAGES = {
    "woke": "relay wake-up (commit to woken)",
    "claimed": "claim (woken to rows in hand)",
    "publish": "to publish (rows in hand to publish call)",
    "handler": "deliver (publish call to handler)",
    "opened": "handler to transaction",
    "body": "transaction body (claim, load, decide, append)",
    "commit": "COMMIT",
}


class Timeline:
    """Moments, in the order they happened, for one saga at a time."""

    def __init__(self) -> None:
        self.moments: list[tuple[float, str]] = []

    def mark(self, what: str) -> None:
        self.moments.append((time.perf_counter(), what))

    def hops(self) -> list[dict[str, float]]:
        """Each hop's stages in ms: from one outbox commit to the next one."""
        hops: list[dict[str, float]] = []
        current: dict[str, float] | None = None
        last = 0.0
        for at, what in self.moments:
            if what == "committed":
                if current is not None and "handler" in current:
                    current["commit"] = (at - last) * 1000
                    hops.append(current)
                current, last = {}, at
                continue
            if current is None or what in current or what not in STAGES:
                continue
            current[what] = (at - last) * 1000
            last = at
        return hops


class _Probe:
    """A store that marks its units' moments and the relay's (everything else is the
    store's own)."""

    def __init__(self, store: Any, timeline: Timeline) -> None:
        self.inner = store
        self.timeline = timeline

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @asynccontextmanager
    async def unit(self) -> AsyncIterator[UnitOfWork]:
        mark = self.timeline.mark
        mark("opened")
        async with self.inner.unit() as unit:
            yield unit
            mark("body")
        if unit.enqueued:
            mark("committed")

    async def wait_for_outbox(self, timeout: float) -> None:
        await self.inner.wait_for_outbox(timeout)
        self.timeline.mark("woke")

    @asynccontextmanager
    async def claim_outbox(self, **kwargs: Any) -> AsyncIterator[Any]:
        async with self.inner.claim_outbox(**kwargs) as claim:
            if claim.rows:
                self.timeline.mark("claimed")
            yield claim


class _ProbedTransport(MemoryTransport):
    def __init__(self, timeline: Timeline) -> None:
        super().__init__()
        self.timeline = timeline

    async def publish(self, messages: Sequence[Any]) -> PublishResult:
        self.timeline.mark("publish")
        return await super().publish(messages)

    async def consume(
        self, queue: str, handler: BatchHandler, *, prefetch: int = 64, concurrency: int = 1
    ) -> Any:
        async def probed(deliveries: Sequence[Delivery]) -> None:
            self.timeline.mark("handler")
            await handler(deliveries)

        return await super().consume(queue, probed, prefetch=prefetch, concurrency=concurrency)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def run(admin: str, sagas: int, seed: int, show: Callable[[str], None] = print) -> None:
    name = f"bench_hops_{uuid.uuid4().hex[:8]}"
    url = await databases.create(admin, name)
    try:
        await databases.install(url)
        await databases.seed_orders(url, seed, 0, sagas + 20)
        timeline = Timeline()
        inner = open_store(url)
        await inner.migrate()
        watched = Watched(cast(SagaStore, _Probe(inner, timeline)))
        store = cast(SagaStore, watched)
        orchestrator = Orchestrator(store, [ORDER])
        runtime = Runtime(_ProbedTransport(timeline)).add(orchestrator, *participants(store))
        latencies: list[float] = []
        hops: list[dict[str, float]] = []
        async with runtime:
            for i in range(sagas + 20):
                order = workload.plan(seed, i)
                timeline.moments.clear()
                ended = watched.wait(str(order.id))
                began = time.perf_counter()
                await orchestrator.start(ORDER.name, order.as_dict(), saga_id=str(order.id))
                await ended
                if i < 20:
                    continue  # warm-up: connections, prepared statements, plans
                latencies.append((time.perf_counter() - began) * 1000)
                hops.extend(timeline.hops())
                if (i - 19) % max(sagas // 10, 1) == 0:
                    p50 = percentile(latencies, 0.5)
                    show(f"  {i - 19}/{sagas} sagas, p50 so far {p50:.1f} ms")
        await inner.close()
        report(latencies, hops, show)
    finally:
        await databases.drop(admin, name)


def report(
    latencies: list[float], hops: list[dict[str, float]], show: Callable[[str], None]
) -> None:
    show(
        f"{len(latencies)} sagas one at a time: p50 {percentile(latencies, 0.5):.1f} ms, "
        f"p95 {percentile(latencies, 0.95):.1f} ms, p99 {percentile(latencies, 0.99):.1f} ms; "
        f"{len(hops) / max(len(latencies), 1):.1f} hops a saga"
    )
    show("| stage (per hop) | mean ms | p50 ms | p95 ms | hops |")
    show("|---|---|---|---|---|")
    total = 0.0
    for key, label in STAGES.items():
        values = [hop[key] for hop in hops if key in hop]
        if not values:
            continue
        mean = sum(values) / len(values)
        total += mean * len(values) / max(len(hops), 1)
        show(
            f"| {label} | {mean:.2f} | {percentile(values, 0.5):.2f} | "
            f"{percentile(values, 0.95):.2f} | {len(values)} |"
        )
    show(f"| a hop, commit to commit | {total:.2f} | | | {len(hops)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--db", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--sagas", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    asyncio.run(run(args.db, args.sagas, args.seed))


if __name__ == "__main__":
    main()
