"""One chaos run, start to end.

Set up: fresh databases for every store (seeded with a world rich enough for the whole
run), the run's queues declared under its own prefix, and the distributed shop started
as real processes under a supervisor. Then the steady order load and the nemesis run
together. When the load stops the nemesis stops, everything it broke is healed, and
the shop gets ``settle`` seconds to bring every saga to an end and empty every outbox
and queue. Then the checks, and, whatever happened, the cleanup: every process stopped,
every database dropped and every queue deleted (unless asked to keep them).

What the run makes on the servers is its :class:`~sagakit_shop.chaos.footprint.Footprint`;
the processes it supervises are its
:class:`~sagakit_shop.chaos.processes.ShopProcesses`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import IO, Any

from sqlalchemy import func, select

from sagakit.stores.sql import SqlSagaStore
from sagakit_shop.app import SAGA, Shop, open_stores
from sagakit_shop.chaos.checks import Findings, check
from sagakit_shop.chaos.config import ChaosConfig
from sagakit_shop.chaos.footprint import Footprint
from sagakit_shop.chaos.load import LoadStats, orders, run_load
from sagakit_shop.chaos.nemesis import Nemesis, Servers, Struck
from sagakit_shop.chaos.processes import ShopProcesses
from sagakit_shop.chaos.schedule import ISOLATED, Fault, plan
from sagakit_shop.distributed import supervise
from sagakit_shop.gateway import Gateway
from sagakit_shop.services.order import orders as order_table
from sagakit_shop.world import World, default_world

#: A good customer's balance in the chaos world: enough for every order of a long run.
RICH_CENTS = 1_000_000_000


@dataclass
class Snapshot:
    """Where a run stands, for the live progress line."""

    phase: str
    elapsed: float
    load: LoadStats
    statuses: Counter[str]
    landed: Counter[str]
    active: list[str]
    planned: int


@dataclass
class ChaosReport:
    config: ChaosConfig
    schedule: list[Fault]
    load: LoadStats = field(default_factory=LoadStats)
    struck: list[Struck] = field(default_factory=list)
    findings: Findings | None = None
    #: Seconds from the heal until every saga was terminal (None: not within the bound).
    settled_in: float | None = None
    drained: bool = False
    wire: dict[str, int] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    healed: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    #: Why the run broke off before its checks (a server unreachable, a bug here).
    error: str | None = None
    trace: str | None = None

    @property
    def landed(self) -> Counter[str]:
        return Counter(s.fault.kind for s in self.struck if s.landed)

    @property
    def ok(self) -> bool:
        return self.error is None and self.findings is not None and self.findings.ok


def schedule_for(config: ChaosConfig) -> list[Fault]:
    """The run's fault schedule, spread over its load (estimated from ``sagas``)."""
    seconds = config.sagas / config.rate if config.sagas else config.seconds
    return plan(config.seed, seconds, config.cadence, config.processes)


async def run_chaos(
    config: ChaosConfig,
    *,
    on_progress: Callable[[Snapshot], None] | None = None,
) -> ChaosReport:
    """Run the shop under faults, check it, clean up; the report says what happened."""
    run = ChaosRun(config, on_progress)
    return await run.go()


class ChaosRun:
    """One run's phases in order; what it makes on the servers is its :class:`Footprint`,
    the processes it supervises its :class:`ShopProcesses`."""

    def __init__(
        self,
        config: ChaosConfig,
        on_progress: Callable[[Snapshot], None] | None,
    ) -> None:
        self.config = config
        self.on_progress = on_progress
        self.schedule = schedule_for(config)
        self.report = ChaosReport(config, self.schedule)
        self.footprint = Footprint(config)
        self.stores: dict[str, SqlSagaStore] = {}
        self.processes: ShopProcesses | None = None
        self.stop = asyncio.Event()
        self.phase = "setting up"
        self.started = time.monotonic()
        self.statuses: Counter[str] = Counter()
        self.nemesis: Nemesis | None = None
        self.output: IO[Any] | None = None
        #: The payment gateway's books (its own SQLite file, as under `sagakit up`).
        self.gateway_books = config.directory / "gateway.db"

    async def go(self) -> ChaosReport:
        supervisor: asyncio.Task[None] | None = None
        progress = asyncio.create_task(self._progress())
        try:
            processes = await self._setup()
            supervisor = asyncio.create_task(supervise(processes.children, stop=self.stop))
            self.phase = "starting"
            await processes.wait_healthy(supervisor)
            await self._faulty_load(processes)
            await self._heal()
            await self._drain()
            self.phase = "checking"
            self.report.findings = await self._check()
        except Exception as exc:
            self.report.error = f"{type(exc).__name__}: {exc}"
            self.report.trace = traceback.format_exc()
        finally:
            progress.cancel()
            await self._teardown(supervisor)
            self.report.elapsed = time.monotonic() - self.started
        return self.report

    # ------------------------------------------------------------------ setup

    async def _setup(self) -> ShopProcesses:
        config = self.config
        directory = config.directory
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "wire").mkdir(exist_ok=True)
        await self.footprint.create_databases()
        urls = self.footprint.urls
        expected = (config.sagas or config.rate * config.seconds) * 1.5
        shop = Shop(open_stores(urls), mode=config.mode)
        try:
            await shop.setup(chaos_world(int(expected)))
            await self.footprint.declare_topology(shop)
        finally:
            await shop.close()
        self.stores = open_stores(urls)
        self.output = (directory / "services.log").open("ab")
        processes = ShopProcesses.for_run(
            config, gateway_books=self.gateway_books, output=self.output
        )
        self.processes = processes
        isolated = {name: str(urls[name].rsplit("/", 1)[1]) for name in ISOLATED}
        self.nemesis = Nemesis(
            {c.name: c for c in processes.children}, Servers.local(config.db), isolated
        )
        return processes

    # ------------------------------------------------------------------ the run

    async def _faulty_load(self, processes: ShopProcesses) -> None:
        config = self.config
        assert self.nemesis is not None
        self.phase = "under fire"
        stream = orders(default_world(), fail_rate=config.fail_rate, seed=config.seed)
        stats = self.report.load

        def done(s: LoadStats) -> bool:
            if config.sagas is not None:
                return s.placed >= config.sagas
            return s.seconds >= config.seconds

        start, enough = time.monotonic(), asyncio.Event()
        nemesis = asyncio.create_task(self.nemesis.run(self.schedule, start, enough))
        try:
            await run_load(processes.apis, stream, rate=config.rate, stats=stats, done=done)
            enough.set()  # the faults under way run their course; the rest are called off
            await nemesis
        finally:
            nemesis.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await nemesis
            self.report.struck = sorted(self.nemesis.struck, key=lambda s: s.at)

    async def _heal(self) -> None:
        assert self.nemesis is not None
        self.phase = "healing"
        self.report.healed = await self.nemesis.heal()

    async def _drain(self) -> None:
        """Wait for every saga to end, and every outbox and queue to empty (stable for a
        few seconds: late duplicates and detours must land before the books are read)."""
        self.phase = "draining"
        healed = time.monotonic()
        deadline = healed + self.config.settle
        quiet = 0
        while time.monotonic() < deadline and quiet < 3:
            await asyncio.sleep(1.0)
            try:
                terminal, empty = await self._settled()
            except Exception:  # a server still waking up: ask again
                quiet = 0
                continue
            if terminal and self.report.settled_in is None:
                self.report.settled_in = time.monotonic() - healed
            quiet = quiet + 1 if terminal and empty else 0
        self.report.drained = quiet >= 3

    async def _settled(self) -> tuple[bool, bool]:
        statuses = await self.stores[SAGA].count_by_status()
        self.statuses = Counter(statuses)
        async with self.stores["order"].unit() as unit:
            count = select(func.count()).select_from(order_table)
            placed = int(await unit.connection.scalar(count) or 0)
        open_ = statuses.get("running", 0) + statuses.get("compensating", 0)
        terminal = open_ == 0 and sum(statuses.values()) >= placed
        unsent = [await store.unsent_count() for store in self.stores.values()]
        return terminal, not any(unsent) and await self.footprint.queues_empty()

    async def _check(self) -> Findings:
        dead = await self.footprint.dead_letters()
        gateway = Gateway(books=self.gateway_books)  # its books, read beside the process
        try:
            findings = await check(
                self.stores,
                expected=self.report.load.expected,
                dead_letters=dead,
                gateway=gateway,
            )
        finally:
            gateway.close()
        if self.report.settled_in is None:
            findings.add(
                "terminal",
                [f"not every saga was terminal {self.config.settle:.0f}s after the faults stopped"],
            )
        return findings

    async def _progress(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self.phase in ("under fire", "healing"):
                with contextlib.suppress(Exception):
                    self.statuses = Counter(await self.stores[SAGA].count_by_status())
            if self.on_progress is not None:
                self.on_progress(self.snapshot())

    def snapshot(self) -> Snapshot:
        nemesis = self.nemesis
        return Snapshot(
            phase=self.phase,
            elapsed=time.monotonic() - self.started,
            load=self.report.load,
            statuses=self.statuses,
            landed=nemesis.landed if nemesis else Counter(),
            active=list(nemesis.active.values()) if nemesis else [],
            planned=len(self.schedule),
        )

    # ------------------------------------------------------------------ teardown

    async def _teardown(self, supervisor: asyncio.Task[None] | None) -> None:
        self.phase = "cleaning up"
        if self.nemesis is not None:
            with contextlib.suppress(Exception):
                self.report.healed += await self.nemesis.heal()
        self.stop.set()
        if supervisor is not None:
            with contextlib.suppress(Exception):
                await supervisor
        children = self.processes.children if self.processes else []
        self.report.restarts = {c.name: c.restarts for c in children}
        self.report.wire = _wire_counts(self.config)
        for store in self.stores.values():
            with contextlib.suppress(Exception):
                await store.close()
        if self.output is not None:
            self.output.close()
        if not self.config.keep:
            await self.footprint.remove()


def chaos_world(orders: int) -> World:
    """The shop's world, with stock for ``orders`` orders and customers who can pay for
    all of them (except the one whose purse is meant to be empty)."""
    world = default_world(orders=orders)
    customers = tuple(
        replace(c, balance_cents=RICH_CENTS) if c.balance_cents > 100_00 else c
        for c in world.customers
    )
    return World(customers, world.items)


def _wire_counts(config: ChaosConfig) -> dict[str, int]:
    total: Counter[str] = Counter()
    for path in (config.directory / "wire").glob("wire-*.json"):
        with contextlib.suppress(OSError, ValueError):
            total.update(json.loads(path.read_text()))
    return dict(total)
