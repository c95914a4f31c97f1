"""sagakit in one process: the in-process runtime on PostgreSQL or SQLite, and the fused
fast path (:mod:`sagakit.engine.fused`) on PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from bench import workload
from bench.systems.sagakit_app import ORDER, Style, Watched, participants
from sagakit import Orchestrator, Runtime, open_store
from sagakit.ports import SagaStore
from sagakit.transports.memory import MemoryTransport

_UNFINISHED = ("running", "compensating")


class InProcessHarness:
    """Orchestrator and participants in this process, the in-process transport, and a
    relay per store: every hop its own transaction, as in any sagakit deployment."""

    def __init__(self, db: str, options: dict[str, Any]) -> None:
        self.url = db
        self.options = options
        self.observer_transactions = 0
        self.store: Any = None
        self.watched: Watched | None = None
        self.orchestrator: Orchestrator | None = None
        self.runtime: Runtime | None = None

    async def open(self, *, recover: bool) -> None:
        self.store = open_store(self.url)
        await self.store.migrate()
        self.watched = Watched(self.store)
        store = cast(SagaStore, self.watched)
        self.orchestrator = Orchestrator(store, [ORDER])
        self.runtime = Runtime(MemoryTransport(), **self.options.get("runtime", {}))
        self.runtime.add(self.orchestrator, *participants(store))
        await self.runtime.start()

    async def submit(self, order: workload.Order) -> str:
        assert self.watched is not None
        assert self.orchestrator is not None
        saga_id = str(order.id)
        ended = self.watched.wait(saga_id)
        await self.orchestrator.start(ORDER.name, order.as_dict(), saga_id=saga_id)
        return await ended

    async def quiesce(self, timeout: float) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            counts = await self.store.count_by_status()
            self.observer_transactions += 1
            left = sum(counts.get(status, 0) for status in _UNFINISHED)
            if left == 0 or loop.time() > deadline:
                return int(left)
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        if self.runtime is not None:
            await self.runtime.stop()
        if self.store is not None:
            await self.store.close()


class EmbeddedHarness(InProcessHarness):
    """The embedded default: one SQLite file holds the saga store and the business
    tables (a participant's effect commits with its inbox row, so they must share it)."""


class FastPathHarness(InProcessHarness):
    """The fused fast path: each step's business write and the orchestrator's decision
    on it commit in one transaction, many sagas per transaction under load."""

    style: Style = "write"

    async def open(self, *, recover: bool) -> None:
        self.store = open_store(self.url)
        await self.store.migrate()
        self.orchestrator = Orchestrator(self.store, [ORDER])
        self.runtime = Runtime().fuse(
            self.orchestrator,
            *participants(self.store, style=self.style),
            **self.options.get("fused", {}),
        )
        await self.runtime.start()

    async def submit(self, order: workload.Order) -> str:
        assert self.orchestrator is not None
        handle = await self.orchestrator.start(ORDER.name, order.as_dict(), saga_id=str(order.id))
        status = (await handle.outcome(timeout=3600)).value
        return {"completed": "approved", "compensated": "rejected"}.get(status, status)


class FastPathStatementsHarness(FastPathHarness):
    """The fused fast path with handlers in the README's style: each runs its write on
    ``ctx.connection`` and decides on the row count (a savepoint each, and the turn on
    shared rows from the batch's first such statement)."""

    style: Style = "statement"
