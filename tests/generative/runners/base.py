"""What every runner shares: the databases of a run, starting, waiting, stopping, and
reading back what happened.

A runner sets a runtime up, starts every saga of the scenario at once, waits (for a
bounded time) until each has ended, lets handlers that should have been cancelled
have the time they asked for (so a write they commit late is seen), stops the runtime
(for a bounded time) and reads the sagas and the participants' tables: an
:class:`Observation`, which :mod:`tests.generative.check` compares with the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sagakit import Participant, SagaDefinition
from sagakit.engine.rules import RuleSet, publish
from sagakit.errors import StoreError, UnknownSagaError
from sagakit.model.status import SagaStatus
from sagakit.ports import DeadLetterQueue
from sagakit.stores import open_store
from sagakit.stores.postgres import PostgresSagaStore
from sagakit.stores.sql import SqlSagaStore
from sagakit.testing import Faults, forward_only
from tests.conftest import create_pg_database, drop_pg_database
from tests.generative.behaviours import Plans, Rows, create_tables, participants_for, read_rows
from tests.generative.scenario import PARTICIPANTS, Family, SagaCase, Scenario

#: The transport's faults, on wherever there is a transport (seeded by the scenario).
FAULTS = {"duplicate": 0.05, "delay": 0.05, "reorder": 0.05, "max_delay": 0.05}
#: How long a runtime's stop may take before it counts as hung.
STOP_BOUND = 15.0
#: Connections each PostgreSQL store may keep (twice that at a peak): the server is
#: shared, and a run opens up to five stores.
PG_POOL = 4

#: Breaks one guarantee of the participants of a run (see test_planted.py).
Plant = Callable[[Sequence[Participant]], None]


@dataclass(slots=True)
class Observation:
    """What a run left behind."""

    runtime: str
    statuses: dict[str, str] = field(default_factory=dict)
    data: dict[str, dict[str, Any]] = field(default_factory=dict)
    rows: Rows = field(default_factory=Rows)
    totals: dict[str, int] = field(default_factory=dict)
    #: Saga logs that do not fold forward only, by saga.
    bad_logs: dict[str, list[str]] = field(default_factory=dict)
    dead_letters: list[str] = field(default_factory=list)
    #: Sagas whose start raised, with the error.
    refused: dict[str, str] = field(default_factory=dict)
    #: Things that went wrong with the runtime itself (a stop that hung, a failed start).
    problems: list[str] = field(default_factory=list)
    #: Every handler call, as (saga, step, op, attempt, behaviour).
    calls: list[tuple[str, str, str, int, str]] = field(default_factory=list)
    seconds: float = 0.0


class Startable(Protocol):
    """A runtime: ``Runtime``, with components added or an orchestrator fused."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Runner(Protocol):
    """Runs a scenario on one runtime."""

    @property
    def name(self) -> str: ...

    @property
    def family(self) -> Family: ...

    async def run(
        self, scenario: Scenario, *, bound: float, plant: Plant | None = None
    ) -> Observation: ...


def faults(scenario: Scenario) -> Faults:
    return Faults(seed=scenario.seed, **FAULTS)


def definitions(scenario: Scenario) -> list[SagaDefinition]:
    return [saga.to_definition() for saga in scenario.sagas]


class Databases:
    """The stores of one run: SQLite files in a temporary directory, or PostgreSQL
    databases of their own, each with the participants' tables; all gone at close."""

    def __init__(self, scenario: Scenario) -> None:
        self.slots = scenario.slots
        self._tmp = tempfile.TemporaryDirectory(prefix="sagakit-generative-")
        self._stores: list[SqlSagaStore] = []
        self._databases: list[str] = []

    async def open(self, kind: str, name: str, participants: Iterable[str] = ()) -> SqlSagaStore:
        if kind == "postgres":
            url = await create_pg_database()
            self._databases.append(url)
            store: SqlSagaStore = PostgresSagaStore(url, pool_size=PG_POOL)
        else:
            store = open_store(f"sqlite:///{Path(self._tmp.name) / name}.db")
        self._stores.append(store)
        await store.migrate()
        await create_tables(store, participants, self.slots)
        return store

    async def shared(self, kind: str) -> SqlSagaStore:
        """One store for the sagas and every participant (the README's layout)."""
        return await self.open(kind, "shared", PARTICIPANTS)

    async def close(self) -> None:
        for store in self._stores:
            # A runtime whose stop hung may still hold a store; its database goes anyway.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(store.close(), 10)
        for url in self._databases:
            await drop_pg_database(url)
        self._tmp.cleanup()


def cast(
    scenario: Scenario, stores: Mapping[str, SqlSagaStore], plant: Plant | None
) -> tuple[Plans, list[Participant]]:
    """The participants of a run, each on its store, doing what the plans say (and
    planted with a bug, when a test asks)."""
    plans = Plans(scenario)
    participants = participants_for(stores, plans)
    if plant is not None:
        plant(participants)
    return plans, participants


async def publish_rules(store: SqlSagaStore, scenario: Scenario) -> None:
    """Each definition's routing rules, for the sagas that have optional or skippable steps."""
    async with store.unit() as unit:
        for saga in scenario.sagas:
            rules = saga.rules()
            if rules is not None:
                parsed = RuleSet.parse(rules, definition=saga.to_definition())
                await publish(unit, parsed)


async def drive(
    seen: Observation,
    runtime: Startable,
    start: Callable[[SagaCase], Awaitable[object]],
    *,
    store: SqlSagaStore,
    scenario: Scenario,
    plans: Plans,
    bound: float,
    dead_letters: DeadLetterQueue | None = None,
) -> None:
    """Start the runtime and every saga, wait for their ends, settle, and stop it."""
    began = time.monotonic()
    await runtime.start()
    try:
        await start_all(scenario.sagas, start, seen)
        started = [saga.saga_id for saga in scenario.sagas if saga.saga_id not in seen.refused]
        await wait_all(store, started, bound)
        await settle(plans, bound)
        if dead_letters is not None:
            await read_dead_letters(seen, dead_letters)
    finally:
        await bounded(f"{type(runtime).__name__}.stop()", runtime.stop(), seen)
    seen.seconds = time.monotonic() - began
    seen.calls = plans.calls


async def start_all(
    sagas: Sequence[SagaCase],
    start: Callable[[SagaCase], Awaitable[object]],
    seen: Observation,
) -> None:
    """Start every saga at once (so their steps share batches)."""
    started = await asyncio.gather(*(start(saga) for saga in sagas), return_exceptions=True)
    for saga, result in zip(sagas, started, strict=True):
        if isinstance(result, BaseException):
            seen.refused[saga.saga_id] = f"{type(result).__name__}: {result}"


async def wait_all(store: SqlSagaStore, saga_ids: Sequence[str], bound: float) -> None:
    """Wait until every saga has ended, or ``bound`` seconds."""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        try:
            statuses = await store.statuses(list(saga_ids))
        except StoreError as exc:
            if not exc.retryable:
                raise
            statuses = {}  # the database is away for a moment (a restart): ask again
        if statuses and all(SagaStatus(statuses.get(i, "running")).terminal for i in saga_ids):
            return
        await asyncio.sleep(0.05)


async def settle(plans: Plans, bound: float) -> None:
    """Give a handler that sleeps past its timeout the time it asked for, so a write it
    commits late (it should have been cancelled) is seen before the runtime stops."""
    wait = min(plans.sleeping_until - time.monotonic(), bound)
    if wait > 0:
        await asyncio.sleep(wait + 0.2)


async def bounded(what: str, work: Coroutine[Any, Any, Any], seen: Observation) -> None:
    """Run ``work`` (a runtime's stop) for STOP_BOUND seconds at most."""
    try:
        await asyncio.wait_for(work, STOP_BOUND)
    except TimeoutError:
        seen.problems.append(f"{what} did not return within {STOP_BOUND:g}s")
    except Exception as exc:
        seen.problems.append(f"{what} failed: {exc!r}")


async def observe(
    seen: Observation,
    saga_store: SqlSagaStore,
    business: Iterable[SqlSagaStore],
    sagas: Sequence[SagaCase],
) -> None:
    """Read each saga's end, data and log, and the participants' tables."""
    try:
        await _read_back(seen, saga_store, business, sagas)
    except StoreError as exc:  # the stopped runtime left a database unusable
        seen.problems.append(f"reading the stores after the stop failed: {exc}")


async def _read_back(
    seen: Observation,
    saga_store: SqlSagaStore,
    business: Iterable[SqlSagaStore],
    sagas: Sequence[SagaCase],
) -> None:
    for saga in sagas:
        try:
            state = await saga_store.get(saga.saga_id)
        except UnknownSagaError:
            seen.statuses[saga.saga_id] = "missing"
            continue
        seen.statuses[saga.saga_id] = str(state.status)
        seen.data[saga.saga_id] = dict(state.data)
        violations = forward_only(saga.saga_id, await saga_store.history(saga.saga_id))
        if violations:
            seen.bad_logs[saga.saga_id] = violations
    seen.rows, seen.totals = await read_rows(business)


async def read_dead_letters(seen: Observation, dead_letters: DeadLetterQueue) -> None:
    """What the transport set aside (before it stops: a broker's queue is read live)."""
    for letter in await dead_letters.list(limit=20):
        seen.dead_letters.append(f"{letter.queue}: {letter.reason} ({letter.detail[:120]})")


__all__ = [
    "FAULTS",
    "Databases",
    "Observation",
    "Plant",
    "Runner",
    "bounded",
    "cast",
    "definitions",
    "drive",
    "faults",
    "observe",
    "publish_rules",
    "read_dead_letters",
    "settle",
    "start_all",
    "wait_all",
]
