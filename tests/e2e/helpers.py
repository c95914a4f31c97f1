"""Run the real ``sagakit`` console script, and fill a store with sagas that really ran."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sagakit import (
    Orchestrator,
    Participant,
    Runtime,
    SagaDefinition,
    SagaHandle,
    StartRequest,
    StepContext,
    StepRejected,
    open_store,
    outcomes,
)
from sagakit.testing import FakeClock
from sagakit.transports.memory import MemoryTransport
from tests.sagas import ORDER, TRIP

#: The console script installed next to this interpreter, as a user would run it.
SAGAKIT = str(Path(sys.executable).parent / "sagakit")

#: A shared start for two saga ids, so a prefix can be ambiguous on purpose.
TWIN_PREFIX = "abcdef01"


@dataclass(frozen=True, slots=True)
class Result:
    args: tuple[str, ...]
    code: int
    out: str
    err: str

    @property
    def output(self) -> str:
        return self.out + self.err

    def __str__(self) -> str:  # what pytest shows when an assertion about it fails
        return f"$ sagakit {' '.join(self.args)}\nexit {self.code}\n{self.output}"


def sagakit(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Result:
    """Run ``sagakit ARGS`` in a subprocess with a wide, colourless terminal."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SAGAKIT_")}
    environ.pop("FORCE_COLOR", None)
    environ.update({"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"})
    environ.update(env or {})
    done = subprocess.run(
        [SAGAKIT, *args],
        capture_output=True,
        text=True,
        env=environ,
        cwd=cwd,
        timeout=120,
        check=False,  # the exit code is what the tests look at
    )
    return Result(tuple(args), done.returncode, done.stdout, done.stderr)


def sagakit_many(*commands: Sequence[str], cwd: Path | None = None) -> list[Result]:
    """Run several independent invocations at once; results in the order given."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda args: sagakit(*args, cwd=cwd), commands))


def no_traceback(result: Result) -> None:
    assert "Traceback" not in result.output, str(result)


class InProcessCli:
    """The same app through typer's runner, for checks too many to pay a process each.

    Exceptions are not caught: one that escapes the CLI fails the test with its traceback,
    as it would have reached the user's terminal.
    """

    def __init__(self) -> None:
        from typer.testing import CliRunner

        self._runner = CliRunner(env={"SAGAKIT_DB": None, "COLUMNS": "200"})

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> Result:
        from sagakit.cli import app

        done = self._runner.invoke(app, list(args), env=env, catch_exceptions=False)
        return Result(tuple(args), done.exit_code, done.stdout, done.stderr)


# ---------------------------------------------------------------------------- a store with sagas


@dataclass(slots=True)
class World:
    """Sagas that ran to their end in the store at ``url``, by business key."""

    url: str
    ids: dict[str, str] = field(default_factory=dict)
    statuses: dict[str, str] = field(default_factory=dict)
    definitions: dict[str, str] = field(default_factory=dict)
    old: set[str] = field(default_factory=set)  # sagas whose clock read three days ago

    def keyed(self, *keys: str) -> set[str]:
        return {self.ids[k] for k in keys}

    def where(self, *, status: str | None = None, definition: str | None = None) -> set[str]:
        return {
            saga_id
            for saga_id, found in self.statuses.items()
            if status in {None, found} and definition in {None, self.definitions[saga_id]}
        }


def participants(store: Any, definitions: Iterable[SagaDefinition]) -> list[Participant]:
    """Every participant the definitions name; a command refuses when the payload says so."""
    by_name: dict[str, Participant] = {}
    for definition in definitions:
        for step in definition.steps:
            participant = by_name.setdefault(step.participant, Participant(step.participant, store))
            for command in filter(None, [step.command, step.compensation]):
                if command not in participant.commands:
                    participant.on(command, _handler(f"{step.participant}.{command}"))
    return list(by_name.values())


def _handler(name: str) -> Any:
    async def handle(ctx: StepContext) -> dict[str, Any]:
        if ctx.payload.get("reject") == name:
            raise StepRejected(f"{name} refused on purpose")
        return {"done": name}

    return handle


async def _run(
    url: str, batches: Sequence[Sequence[StartRequest]], *, clock: FakeClock | None = None
) -> dict[str, str]:
    store = open_store(url)
    try:
        orchestrator = Orchestrator(store, [ORDER, TRIP], clock=clock)
        runtime = Runtime(MemoryTransport(), timer_interval=0.01, relay_poll=0.05)
        runtime.add(orchestrator, *participants(store, [ORDER, TRIP]))
        statuses: dict[str, str] = {}
        async with runtime:
            for batch in batches:  # one after the other, so later batches are newer
                ids = await orchestrator.start_many(batch)
                statuses.update(await outcomes([SagaHandle(i, store) for i in ids], timeout=20))
        return statuses
    finally:
        await store.close()


async def build_world(url: str) -> World:
    """Orders and trips, some completed and some compensated, plus one order from days ago."""
    store = open_store(url)
    await store.migrate()
    await store.close()
    world = World(url)

    def request(definition: str, key: str, reject: str | None = None, **kw: Any) -> StartRequest:
        saga_id = kw.get("saga_id") or uuid.uuid4().hex
        world.ids[key] = saga_id
        world.definitions[saga_id] = definition
        return StartRequest(definition, {"reject": reject}, saga_id=saga_id, key=key)

    twin = TWIN_PREFIX + uuid.uuid4().hex[len(TWIN_PREFIX) :]
    twin_too = TWIN_PREFIX + uuid.uuid4().hex[len(TWIN_PREFIX) :]
    old = [request("order", "order-old")]
    orders = [
        request("order", "order-1", saga_id=twin),
        request("order", "order-2", saga_id=twin_too),
        request("order", "order-3"),
        request("order", "order-4", reject="payment.charge"),
        request("order", "order-5", reject="payment.charge"),
    ]
    trips = [
        request("trip", "trip-1"),
        request("trip", "trip-2"),
        request("trip", "trip-3", reject="cars.rent"),
    ]
    three_days_ago = FakeClock(time.time() - 3 * 86400)
    world.statuses.update(await _run(url, [old], clock=three_days_ago))
    world.old = {world.ids["order-old"]}
    world.statuses.update(await _run(url, [orders, trips]))
    return world


def build_world_sync(url: str) -> World:
    return asyncio.run(build_world(url))


def run_sagas(url: str, requests: Sequence[StartRequest]) -> list[str]:
    """Run these sagas to their end in the (migrated) store at ``url``; return their ids."""
    with_ids = [
        r if r.saga_id else StartRequest(r.definition, r.data, saga_id=uuid.uuid4().hex, key=r.key)
        for r in requests
    ]
    asyncio.run(_run(url, [with_ids]))
    return [str(r.saga_id) for r in with_ids]
