"""The fused fast path: participants and the orchestrator's decisions in one transaction
per step, with the same guarantees as the ordinary runtime."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text

from sagakit import (
    Orchestrator,
    Participant,
    RetryPolicy,
    SagaDefinition,
    Step,
    StepContext,
    StepKind,
    StepRejected,
)
from sagakit.definition import approval
from sagakit.fused import FusedRuntime
from sagakit.stores.schema import saga_locks
from sagakit.stores.sqlite import SqliteSagaStore

ONCE = RetryPolicy(attempts=1, backoff=timedelta(milliseconds=10), cap=timedelta(milliseconds=10))

ORDER = SagaDefinition(
    "order",
    steps=[
        Step(name="reserve", participant="stock", command="take", compensation="put", retry=ONCE),
        Step(name="ship", participant="post", command="ship", kind=StepKind.PIVOT, retry=ONCE),
    ],
)
CONFIRMED = SagaDefinition(
    "confirmed",
    steps=[
        approval("confirm", timeout=timedelta(days=1)),
        Step(name="reserve", participant="stock", command="take", kind=StepKind.RETRIABLE),
    ],
)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteSagaStore]:
    opened = SqliteSagaStore(tmp_path / "fused.db")
    await opened.migrate()
    async with opened.unit() as unit:
        await unit.connection.execute(text("CREATE TABLE moves (saga TEXT, what TEXT)"))
    yield opened
    await opened.close()


def participants(store: SqliteSagaStore) -> list[Participant]:
    stock, post = Participant("stock", store), Participant("post", store)

    async def record(ctx: StepContext, what: str) -> None:
        await ctx.connection.execute(
            text("INSERT INTO moves VALUES (:s, :w)"), {"s": ctx.saga_id, "w": what}
        )

    @stock.command("take")
    async def take(ctx: StepContext) -> None:
        if ctx.payload.get("lock"):
            await ctx.locks.acquire(f"item:{ctx.payload['lock']}")
        await record(ctx, "take")

    @stock.command("put")
    async def put(ctx: StepContext) -> None:
        await record(ctx, "put")

    @post.command("ship")
    async def ship(ctx: StepContext) -> None:
        how = ctx.payload["ship"]
        if how == "refuse":  # before any write: nothing to undo
            raise StepRejected("no courier")
        await record(ctx, "ship")
        if how == "write-then-refuse":  # after a write: the write must not survive
            raise StepRejected("label printer jammed")

    return [stock, post]


async def moves(store: SqliteSagaStore) -> list[tuple[str, str]]:
    async with store.unit() as unit:
        rows = await unit.connection.execute(text("SELECT saga, what FROM moves ORDER BY rowid"))
        return [(r[0], r[1]) for r in rows]


async def test_many_sagas_share_transactions_and_each_ends_as_its_steps_say(
    store: SqliteSagaStore,
) -> None:
    plan = {f"s{i}": ["ok", "refuse", "write-then-refuse"][i % 3] for i in range(30)}
    fused = FusedRuntime(Orchestrator(store, [ORDER]), participants(store))
    async with fused:
        ends = await asyncio.gather(
            *(fused.run("order", {"ship": how}, saga_id=sid) for sid, how in plan.items())
        )
    assert fused.transactions < 30 * 3  # many steps per transaction
    done = await moves(store)
    for (sid, how), end in zip(plan.items(), ends, strict=True):
        mine = [what for saga, what in done if saga == sid]
        if how == "ok":
            assert end == "completed"
            assert mine == ["take", "ship"]
        else:
            # The refused shipment left no row, even when it had written one first.
            assert end == "compensated"
            assert mine == ["take", "put"]


async def test_a_saga_waiting_on_a_person_is_held_in_the_store_not_in_memory(
    store: SqliteSagaStore,
) -> None:
    fused = FusedRuntime(Orchestrator(store, [CONFIRMED]), participants(store))
    async with fused:
        for i in range(50):
            await fused.begin("confirmed", {}, saga_id=f"w{i}")
        assert fused.cached_sagas == 0
    counts = await store.count_by_status()
    assert counts == {"running": 50}
    assert await moves(store) == []


async def test_a_finished_saga_releases_its_semantic_locks(store: SqliteSagaStore) -> None:
    async def held() -> list[str]:
        async with store.unit() as unit:
            return [row.resource for row in await unit.connection.execute(select(saga_locks))]

    fused = FusedRuntime(Orchestrator(store, [ORDER]), participants(store))
    async with fused:
        first = await fused.run("order", {"ship": "ok", "lock": 7}, saga_id="a")
        second = await fused.run("order", {"ship": "refuse", "lock": 8}, saga_id="b")
        assert (first, second) == ("completed", "compensated")
        # The release follows the saga's end in a transaction of its own, as it does
        # when a participant gets it over a transport.
        for _ in range(100):
            if not await held():
                break
            await asyncio.sleep(0.05)
    assert await held() == []


async def test_a_new_runtime_finishes_what_a_stopped_one_left_in_the_outbox(
    store: SqliteSagaStore,
) -> None:
    # The first runtime only decides: its participants never get to run the commands.
    orchestrator = Orchestrator(store, [ORDER])
    await orchestrator.start_many([])  # nothing to start: the call is harmless
    for i in range(5):
        await orchestrator.start("order", {"ship": "ok"}, saga_id=f"left{i}")
    fused = FusedRuntime(Orchestrator(store, [ORDER]), participants(store))
    async with fused:
        ends = await asyncio.wait_for(
            asyncio.gather(*(fused.wait(f"left{i}") for i in range(5))), 10
        )
    assert ends == ["completed"] * 5
    taken = [saga for saga, what in await moves(store) if what == "take"]
    assert sorted(taken) == [f"left{i}" for i in range(5)]


def test_every_participant_must_be_local(store: SqliteSagaStore) -> None:
    with pytest.raises(ValueError, match="missing"):
        FusedRuntime(Orchestrator(store, [ORDER]), participants(store)[:1])
