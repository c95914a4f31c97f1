"""A saga worker for the crash test to SIGKILL: ``python -m tests.chaos.crash_worker``.

It runs the ORDER saga of ``tests/sagas.py`` end to end in one process (embedded mode:
one store, the in-process transport), with participants that write one ``effects`` row
per command they run. Run it again after a kill and it carries on from the store:
starting a saga id that exists is a no-op, unsent outbox rows are published again,
and due retries fire from their stored times.

What each saga does is a pure function of ``--seed`` and its index (:func:`plan`), so
the test can tell what every saga must end as and which effects it must leave behind.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Column, Float, Integer, MetaData, String, Table

from sagakit import (
    Orchestrator,
    Participant,
    Runtime,
    SagaHandle,
    StartRequest,
    StepContext,
    StepRejected,
    TransientError,
    open_store,
    outcomes,
)
from sagakit.engine.participant import Handler
from sagakit.observe.logs import configure
from sagakit.stores.sql import SqlSagaStore
from sagakit.transports.memory import MemoryTransport
from tests.sagas import ORDER

#: Printed once the runtime consumes, so the test can aim its kills at work in flight.
RUNNING = "crash-worker: running"

#: Each handler dawdles up to this long inside its open transaction, so that a kill
#: often lands between a business write and its commit.
MAX_HANDLER_SLEEP = 0.02

#: Sagas are started in waves, so a kill finds them spread over every step.
WAVE = 10
WAVE_PAUSE = 0.15

#: Small batches commit often, so kills also land between a consumer's commit and the
#: relay marking the message sent: the window where redelivery must be absorbed.
PREFETCH = 8

metadata = MetaData()

#: The participants' business table. No unique key on purpose: a command whose effect
#: happened twice leaves two rows for the test to find.
effects = Table(
    "effects",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("saga_id", String(128), nullable=False),
    Column("step", String(64), nullable=False),
    Column("op", String(16), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("message_id", String(128), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("recorded_at", Float, nullable=False),
)

#: (participant, command, step, op) for every command of ORDER.
COMMANDS = [
    ("inventory", "reserve", "reserve", "action"),
    ("inventory", "release", "reserve", "compensation"),
    ("payment", "charge", "charge", "action"),
    ("payment", "refund", "charge", "compensation"),
    ("shipping", "ship", "ship", "action"),
    ("notification", "send", "notify", "action"),
]

COMPLETE, DECLINED, UNSHIPPABLE = "complete", "declined", "unshippable"


def saga_id(index: int) -> str:
    return f"crash-{index}"


def plan(seed: int, index: int) -> dict[str, Any]:
    """The data of saga ``index``: how it must end and which steps fail transiently first.

    ``declined`` makes charge refuse (the saga compensates reserve), ``unshippable``
    makes the pivot refuse (it compensates charge and reserve). A step in ``flaky``
    fails its first attempt with a TransientError, a step in ``flaky_undo`` its first
    compensation attempt, so durable retries are exercised across the kills too.
    """
    rng = random.Random(f"{seed}:{index}")
    outcome = rng.choices([COMPLETE, DECLINED, UNSHIPPABLE], weights=[6, 2, 2])[0]
    steps = [step.name for step in ORDER.steps]
    return {
        "order": index,
        "outcome": outcome,
        "flaky": [s for s in steps if rng.random() < 0.2],
        "flaky_undo": [s for s in ("reserve", "charge") if rng.random() < 0.3],
    }


def expected_effects(data: Mapping[str, Any]) -> dict[tuple[str, str], int]:
    """How many effect rows each (step, op) of a saga with this data must leave: the
    rolled-back writes of refused and transiently failed commands leave none."""
    outcome = data["outcome"]
    if outcome == COMPLETE:
        return {(s, "action"): 1 for s in ("reserve", "charge", "ship", "notify")}
    if outcome == DECLINED:
        return {("reserve", "action"): 1, ("reserve", "compensation"): 1}
    return {(s, op): 1 for s in ("reserve", "charge") for op in ("action", "compensation")}


def handler(step: str, op: str) -> Handler:
    async def handle(ctx: StepContext) -> dict[str, Any]:
        # Write first and fail afterwards: a refusal or a transient failure must roll
        # this row back with the handler's savepoint, or the test sees it.
        await ctx.connection.execute(
            effects.insert().values(
                saga_id=ctx.saga_id,
                step=ctx.step,
                op=ctx.op,
                attempt=ctx.attempt,
                message_id=ctx.message_id,
                pid=os.getpid(),
                recorded_at=time.time(),
            )
        )
        await asyncio.sleep(random.uniform(0, MAX_HANDLER_SLEEP))
        flaky = ctx.payload["flaky_undo" if op == "compensation" else "flaky"]
        if step in flaky and ctx.attempt == 1:
            raise TransientError(f"{step} {op}: first attempt fails on purpose")
        outcome = ctx.payload["outcome"]
        if op == "action" and (
            (step == "charge" and outcome == DECLINED)
            or (step == "ship" and outcome == UNSHIPPABLE)
        ):
            raise StepRejected(f"{outcome} on purpose")
        return {"order": ctx.payload["order"]}

    return handle


def participants(store: SqlSagaStore) -> list[Participant]:
    by_name: dict[str, Participant] = {}
    for name, command, step, op in COMMANDS:
        participant = by_name.setdefault(name, Participant(name, store))
        participant.on(command, handler(step, op))
    return list(by_name.values())


async def run(url: str, count: int, seed: int) -> int:
    ids = [saga_id(i) for i in range(count)]
    requests = [
        StartRequest("order", plan(seed, i), saga_id=sid, key=f"order-{i}")
        for i, sid in enumerate(ids)
    ]
    store = open_store(url)
    try:
        await store.migrate()
        async with store.unit() as unit:
            await unit.connection.run_sync(metadata.create_all)  # creates only what is missing
        orchestrator = Orchestrator(store, [ORDER])
        runtime = Runtime(MemoryTransport(), prefetch=PREFETCH)
        runtime.add(orchestrator, *participants(store))
        async with runtime:
            print(RUNNING, os.getpid(), flush=True)  # the test waits for this line
            for start in range(0, count, WAVE):
                # After a restart most of these exist already; starting them is a no-op.
                await orchestrator.start_many(requests[start : start + WAVE])
                await asyncio.sleep(WAVE_PAUSE)
            statuses = await outcomes([SagaHandle(i, store) for i in ids], timeout=300)
            # The last replies are confirmed (and marked sent) just after the sagas end;
            # let the relay finish so a clean exit leaves an empty outbox behind.
            for _ in range(200):
                if not await store.unsent_count():
                    break
                await asyncio.sleep(0.05)
        print(f"crash-worker: done {dict(Counter(statuses.values()))}", flush=True)
    finally:
        await store.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="store URL (sqlite:///... or postgresql://...)")
    parser.add_argument("--sagas", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    configure("story", level=logging.WARNING, stream=sys.stderr, colour=False)
    return asyncio.run(run(args.db, args.sagas, args.seed))


if __name__ == "__main__":
    sys.exit(main())
