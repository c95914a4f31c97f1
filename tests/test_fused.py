"""The fused fast path: participants and the orchestrator's decisions in one transaction
per step, with the same guarantees as the ordinary runtime."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import select, text

from sagakit import (
    Orchestrator,
    Participant,
    RetryPolicy,
    Runtime,
    SagaDefinition,
    Step,
    StepContext,
    StepKind,
    StepRejected,
)
from sagakit.model.definition import approval
from sagakit.stores import open_store
from sagakit.stores.schema import saga_locks
from sagakit.stores.sql import SqlSagaStore
from sagakit.transports.memory import MemoryTransport
from tests.fused_kit import Fused

ONCE = RetryPolicy(attempts=1, backoff=timedelta(milliseconds=10), cap=timedelta(milliseconds=10))

ORDER = SagaDefinition(
    "order",
    steps=[
        Step(name="reserve", participant="stock", command="take", compensation="put", retry=ONCE),
        Step(name="ship", participant="post", command="ship", kind=StepKind.PIVOT, retry=ONCE),
    ],
)
FAR = SagaDefinition(  # run by another runtime, with a participant the fused one lacks
    "far", steps=[Step(name="go", participant="far", command="go", kind=StepKind.RETRIABLE)]
)
CONFIRMED = SagaDefinition(
    "confirmed",
    steps=[
        approval("confirm", timeout=timedelta(days=1)),
        Step(name="reserve", participant="stock", command="take", kind=StepKind.RETRIABLE),
    ],
)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[SqlSagaStore]:
    """The saga store and the business tables in one database: SQLite, then PostgreSQL."""
    opened = open_store(store_url)
    await opened.migrate()
    serial = "BIGSERIAL" if store_url.startswith("postgresql") else "INTEGER"
    async with opened.unit() as unit:
        for ddl in (
            f"CREATE TABLE moves (n {serial} PRIMARY KEY, saga TEXT, what TEXT)",
            "CREATE TABLE labels (saga TEXT PRIMARY KEY)",
        ):
            await unit.connection.execute(text(ddl))
    yield opened
    await opened.close()


def participants(store: SqlSagaStore) -> list[Participant]:
    stock, post = Participant("stock", store), Participant("post", store)

    async def record(ctx: StepContext, what: str) -> None:
        await ctx.connection.execute(
            text("INSERT INTO moves (saga, what) VALUES (:s, :w)"), {"s": ctx.saga_id, "w": what}
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


async def moves(store: SqlSagaStore) -> list[tuple[str, str]]:
    async with store.unit() as unit:
        rows = await unit.connection.execute(text("SELECT saga, what FROM moves ORDER BY n"))
        return [(r[0], r[1]) for r in rows]


async def test_many_sagas_share_transactions_and_each_ends_as_its_steps_say(
    store: SqlSagaStore,
) -> None:
    plan = {f"s{i}": ["ok", "refuse", "write-then-refuse"][i % 3] for i in range(30)}
    fused = Fused(store, [ORDER], participants(store))
    async with fused:
        ends = await asyncio.gather(
            *(fused.run("order", {"ship": how}, saga_id=sid) for sid, how in plan.items())
        )
    assert fused.engine.committed < 30 * 3  # many steps per transaction
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


async def test_running_a_saga_again_after_it_ended_returns_how_it_ended(
    store: SqlSagaStore,
) -> None:
    # A caller whose first call timed out starts the same saga id again: nothing runs
    # twice, and the answer is the saga's end, whether this runtime or an earlier one
    # ran it.
    first = Fused(store, [ORDER], participants(store))
    async with first:
        assert await first.run("order", {"ship": "ok"}, saga_id="again-1") == "completed"
        again = first.run("order", {"ship": "refuse"}, saga_id="again-1")
        assert await asyncio.wait_for(again, 5) == "completed"
    later = Fused(store, [ORDER], participants(store))
    async with later:
        again = later.run("order", {"ship": "ok"}, saga_id="again-1")
        assert await asyncio.wait_for(again, 5) == "completed"
    assert [what for saga, what in await moves(store) if saga == "again-1"] == ["take", "ship"]


async def test_starting_a_saga_that_is_still_running_starts_nothing(
    store: SqlSagaStore,
) -> None:
    # Starts are taken to be new without asking the store: the one that is not clashes
    # with its own log, and its batch runs again, now asking. A saga started beside it
    # is started once all the same.
    fused = Fused(store, [CONFIRMED, ORDER], participants(store))
    async with fused:
        await fused.begin("confirmed", {}, saga_id="held-1")
        again, other = await asyncio.gather(
            fused.begin("confirmed", {}, saga_id="held-1"),
            fused.run("order", {"ship": "ok"}, saga_id="other-1"),
        )
        assert (again, other) == ("held-1", "completed")
        assert fused.engine.retries["conflict"] >= 1
    assert await store.count_by_status() == {"running": 1, "completed": 1}
    async with store.unit() as unit:
        started = await unit.connection.execute(
            text("SELECT saga_id FROM saga_events WHERE type = 'SagaStarted' ORDER BY saga_id")
        )
        assert [r[0] for r in started] == ["held-1", "other-1"]
    assert await moves(store) == [("other-1", "take"), ("other-1", "ship")]


async def test_a_saga_another_runtime_ends_answers_the_waiters_here_within_a_sweep(
    store: SqlSagaStore,
) -> None:
    far = Participant("far", store)

    @far.command("go")
    async def go(ctx: StepContext) -> None:
        return None

    elsewhere = Orchestrator(store, [FAR], group="elsewhere")
    fused = Fused(store, [ORDER], participants(store), sweep_interval=0.1)
    async with fused:
        ended = fused.wait("far-1")
        async with Runtime(MemoryTransport()).add(elsewhere, far):
            await elsewhere.start("far", {}, saga_id="far-1")
            assert await asyncio.wait_for(ended, 10) == "completed"


async def test_a_saga_waiting_on_a_person_is_held_in_the_store_not_in_memory(
    store: SqlSagaStore,
) -> None:
    fused = Fused(store, [CONFIRMED], participants(store))
    async with fused:
        for i in range(50):
            await fused.begin("confirmed", {}, saga_id=f"w{i}")
        assert fused.engine.cached_sagas == 0
    counts = await store.count_by_status()
    assert counts == {"running": 50}
    assert await moves(store) == []


async def test_a_finished_saga_releases_its_semantic_locks(store: SqlSagaStore) -> None:
    async def held() -> list[str]:
        async with store.unit() as unit:
            return [row.resource for row in await unit.connection.execute(select(saga_locks))]

    fused = Fused(store, [ORDER], participants(store))
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
    store: SqlSagaStore,
) -> None:
    # The first runtime only decides: its participants never get to run the commands.
    orchestrator = Orchestrator(store, [ORDER])
    await orchestrator.start_many([])  # nothing to start: the call is harmless
    for i in range(5):
        await orchestrator.start("order", {"ship": "ok"}, saga_id=f"left{i}")
    fused = Fused(store, [ORDER], participants(store))
    async with fused:
        ends = await asyncio.wait_for(
            asyncio.gather(*(fused.wait(f"left{i}") for i in range(5))), 10
        )
    assert ends == ["completed"] * 5
    taken = [saga for saga, what in await moves(store) if what == "take"]
    assert sorted(taken) == [f"left{i}" for i in range(5)]


async def test_a_new_runtime_runs_the_steps_a_stopped_one_held_in_memory(
    store: SqlSagaStore,
) -> None:
    # The first runtime's courier never answers: each saga's ship request is in the log
    # and its command only in that runtime's memory when it stops.
    stock = participants(store)[0]
    post = Participant("post", store)
    reached = asyncio.Event()

    @post.command("ship")
    async def hang(_ctx: StepContext) -> None:
        reached.set()
        await asyncio.Event().wait()

    first = Fused(store, [ORDER], [stock, post])
    async with first:
        # All five start in one transaction, before any shipment hangs its own.
        await asyncio.gather(
            *(first.begin("order", {"ship": "ok"}, saga_id=f"held{i}") for i in range(5))
        )
        await asyncio.wait_for(reached.wait(), 10)
    async with store.unit() as unit:
        queued = await unit.connection.execute(text("SELECT count(*) FROM saga_outbox"))
        assert queued.scalar_one() == 0  # no outbox row: the log is what holds them
    second = Fused(store, [ORDER], participants(store))
    async with second:
        ends = await asyncio.wait_for(
            asyncio.gather(*(second.wait(f"held{i}") for i in range(5))), 10
        )
    assert ends == ["completed"] * 5
    done = await moves(store)
    for i in range(5):
        assert [what for saga, what in done if saga == f"held{i}"] == ["take", "ship"]


def test_every_participant_must_be_local(store: SqlSagaStore) -> None:
    with pytest.raises(ValueError, match="missing"):
        Fused(store, [ORDER], participants(store)[:1])


async def labels(store: SqlSagaStore) -> int:
    async with store.unit() as unit:
        return int(await unit.connection.scalar(text("SELECT count(*) FROM labels")))


def writing_participants(store: SqlSagaStore) -> list[Participant]:
    """The same steps, writing through ctx.write: held, and sent in groups."""
    stock, post = Participant("stock", store), Participant("post", store)
    insert = "INSERT INTO moves (saga, what) VALUES (:saga, :what)"

    @stock.command("take")
    async def take(ctx: StepContext) -> None:
        await ctx.write(insert, {"saga": ctx.saga_id, "what": "take"})
        # A statement of its own comes after the held write, and sees it.
        seen = await ctx.connection.scalar(
            text("SELECT count(*) FROM moves WHERE saga = :s"), {"s": ctx.saga_id}
        )
        if seen != 1:
            raise AssertionError(f"the held write was not sent first ({seen} rows)")

    @stock.command("put")
    async def put(ctx: StepContext) -> None:
        await ctx.write(insert, {"saga": ctx.saga_id, "what": "put"})

    @post.command("ship")
    async def ship(ctx: StepContext) -> None:
        await ctx.write(insert, {"saga": ctx.saga_id, "what": "ship"})
        await ctx.write("INSERT INTO labels (saga) VALUES (:saga)", {"saga": ctx.saga_id})
        if ctx.payload["ship"] == "write-then-refuse":
            raise StepRejected("label printer jammed")

    return [stock, post]


async def test_held_writes_go_in_groups_and_vanish_with_a_refused_step(
    store: SqlSagaStore,
) -> None:
    plan = {f"h{i}": ["ok", "write-then-refuse"][i % 2] for i in range(20)}
    fused = Fused(store, [ORDER], writing_participants(store))
    async with fused:
        ends = await asyncio.gather(
            *(fused.run("order", {"ship": how}, saga_id=sid) for sid, how in plan.items())
        )
    done = await moves(store)
    for (sid, how), end in zip(plan.items(), ends, strict=True):
        mine = [what for saga, what in done if saga == sid]
        if how == "ok":
            assert (end, mine) == ("completed", ["take", "ship"])
        else:  # the refused step's held writes were dropped, not undone
            assert (end, mine) == ("compensated", ["take", "put"])
    assert not fused.engine.retries  # no batch ran twice: a dropped held write undoes nothing
    assert await labels(store) == 10


async def test_a_held_write_that_fails_fails_its_own_step_only(store: SqlSagaStore) -> None:
    # A label for "dup" exists already: its shipment's INSERT breaks the key, which
    # fails the whole group of inserts; the batch runs again with writes sent one by
    # one, and only "dup" fails. (Its pivot failed with an error, not a refusal, so its
    # outcome counts as unknown and an operator gets it, as with any handler.)
    async with store.unit() as unit:
        await unit.connection.execute(text("INSERT INTO labels (saga) VALUES ('dup')"))
    ids = ["dup", *(f"ok{i}" for i in range(9))]
    fused = Fused(store, [ORDER], writing_participants(store))
    async with fused:
        ends = dict(
            zip(
                ids,
                await asyncio.gather(*(fused.run("order", {"ship": "ok"}, saga_id=i) for i in ids)),
                strict=True,
            )
        )
    assert ends == {"dup": "needs_attention", **dict.fromkeys(ids[1:], "completed")}
    assert fused.engine.retries["unbatch"] >= 1
    done = await moves(store)
    assert [what for saga, what in done if saga == "dup"] == ["take"]
    assert sorted(saga for saga, what in done if what == "ship") == ids[1:]
    assert await labels(store) == 10  # the old "dup" and nine new ones
