"""The steady order load: orders placed through the order HTTP API at a fixed rate.

The orders come from the shop's own planner (``sagakit_shop.world.plan_orders``): most must
complete, and a share is set up to fail for one business reason each (no stock, a
declined card, no funds, a region nobody ships to...) and so must compensate. The load
is open loop: it keeps its rate whatever the shop is going through, skips the moments
it could not keep (a paused API holds requests until they time out), and never retries
a request (one that timed out may still have placed its order; the checks find it).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import httpx

from sagakit_shop.world import OrderRequest, World, plan_orders

#: Requests in flight at most; beyond it the load waits (a stalled API holds them).
MAX_IN_FLIGHT = 32
REQUEST_TIMEOUT = 5.0


@dataclass
class LoadStats:
    placed: int = 0
    #: Why requests did not place an order: "refused", "timeout", "HTTP 500", ...
    failed: Counter[str] = field(default_factory=Counter)
    #: What each placed order must end as: "completed" or "compensated".
    expected: dict[str, str] = field(default_factory=dict)
    #: Why each order that must fail was set up to fail.
    causes: dict[str, str] = field(default_factory=dict)
    started: float = 0.0
    stopped: float = 0.0

    @property
    def seconds(self) -> float:
        end = self.stopped or time.monotonic()
        return max(end - self.started, 0.0) if self.started else 0.0

    def as_json(self) -> dict[str, object]:
        seconds = self.seconds
        return {
            "seconds": round(seconds, 1),
            "placed": self.placed,
            "placed_per_s": round(self.placed / seconds, 1) if seconds else 0.0,
            "not_placed": dict(self.failed),
            "must_compensate": sum(1 for e in self.expected.values() if e == "compensated"),
        }


def orders(world: World, *, fail_rate: float, seed: int) -> Iterator[OrderRequest]:
    """An endless seeded stream of orders, in chunks from the shop's planner."""
    for chunk in itertools.count():
        yield from plan_orders(world, 1000, fail_rate=fail_rate, seed=seed * 7919 + chunk)


async def run_load(
    apis: Sequence[str],
    stream: Iterator[OrderRequest],
    *,
    rate: float,
    stats: LoadStats,
    done: Callable[[LoadStats], bool],
) -> LoadStats:
    """Place orders at ``rate`` per second until ``done(stats)`` says so, taking the order
    APIs (replicas of the order service) in turn, as a load balancer would."""
    slots = asyncio.Semaphore(MAX_IN_FLIGHT)
    tasks: set[asyncio.Task[None]] = set()

    def finished(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        slots.release()

    limits = httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=16)
    turns = itertools.count()
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT, limits=limits) as client:
        stats.started = base = time.monotonic()
        sent = 0
        try:
            while not done(stats):
                await slots.acquire()
                turn = next(turns)
                order = next(stream)
                ahead = [apis[(turn + i) % len(apis)] for i in range(len(apis))]
                task = asyncio.create_task(_place(client, ahead, order, stats))
                tasks.add(task)
                task.add_done_callback(finished)
                sent += 1
                wait = base + sent / rate - time.monotonic()
                if wait < -1.0:  # fell behind (the API stalled): keep the rate, drop the debt
                    base, sent = time.monotonic(), 0
                elif wait > 0:
                    await asyncio.sleep(wait)
            if tasks:
                await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT + 1)
        finally:
            for task in tasks:
                task.cancel()
            stats.stopped = time.monotonic()
    return stats


async def _place(
    client: httpx.AsyncClient, apis: Sequence[str], order: OrderRequest, stats: LoadStats
) -> None:
    """Place one order at the first API that takes the connection (a refused connection
    never reached a server, so trying the next cannot place the order twice)."""
    body = {"customer_id": order.customer_id, "sku": order.sku, "quantity": order.quantity}
    for api in apis:
        try:
            response = await client.post(f"{api}/orders", json=body)
            break
        except httpx.ConnectError:
            continue
        except httpx.TimeoutException:
            stats.failed["timeout"] += 1
            return
        except httpx.HTTPError:
            stats.failed["broken"] += 1
            return
    else:
        stats.failed["refused"] += 1
        return
    if response.status_code != 201:
        stats.failed[f"HTTP {response.status_code}"] += 1
        return
    order_id = str(response.json()["order_id"])
    stats.placed += 1
    stats.expected[order_id] = order.expected
    if order.cause:
        stats.causes[order_id] = order.cause
