"""The fused runtime on workloads the shop never runs: steps that mix held writes with
statements of their own in one batch, sagas that share hot rows, handlers that hang,
and a stop while a handler is in the database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import text

from sagakit import (
    Participant,
    RetryPolicy,
    SagaDefinition,
    Step,
    StepContext,
    StepKind,
    StepRejected,
)
from sagakit.clock import FakeClock
from sagakit.engine.fused.queue import StepQueue
from sagakit.engine.orchestrator import Orchestrator
from sagakit.model.messages import Envelope, command_queue
from sagakit.stores import open_store
from sagakit.stores.sql import SqlSagaStore
from tests.fused_kit import Fused

ONCE = RetryPolicy(attempts=1)
TWICE = RetryPolicy(attempts=2, backoff=timedelta(milliseconds=10))

PAY = SagaDefinition(
    "pay",
    steps=[
        Step(name="debit", participant="bank", command="debit", compensation="credit", retry=ONCE),
        Step(name="note", participant="bank", command="note", kind=StepKind.PIVOT, retry=ONCE),
    ],
)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[SqlSagaStore]:
    """The saga store and the business tables in one database: SQLite, then PostgreSQL."""
    opened = open_store(store_url)
    await opened.migrate()
    async with opened.unit() as unit:
        for ddl in (
            "CREATE TABLE effects (saga TEXT, what TEXT)",
            "CREATE TABLE accounts (id TEXT PRIMARY KEY, balance BIGINT)",
            "INSERT INTO accounts VALUES ('hot', 1000000), ('cold', 1000000)",
        ):
            await unit.connection.execute(text(ddl))
    yield opened
    await opened.close()


async def effects(store: SqlSagaStore) -> list[tuple[str, str]]:
    async with store.unit() as unit:
        rows = await unit.connection.execute(text("SELECT saga, what FROM effects ORDER BY saga"))
        return [(r[0], r[1]) for r in rows]


async def balance(store: SqlSagaStore, account: str = "hot") -> int:
    async with store.unit() as unit:
        found = await unit.connection.execute(
            text("SELECT balance FROM accounts WHERE id = :id"), {"id": account}
        )
        return int(found.scalar_one())


def bank(store: SqlSagaStore) -> Participant:
    """Debits the hot account in the style its payload names: a held write, a
    statement on the connection checking the row count (the README's style), or a
    statement and then a refusal."""
    participant = Participant("bank", store)

    @participant.command("debit")
    async def debit(ctx: StepContext) -> None:
        style, amount = ctx.payload["style"], int(ctx.payload["amount"])
        move = "UPDATE accounts SET balance = balance - :n WHERE id = 'hot' AND balance >= :n"
        if style == "held":
            await ctx.write(move, {"n": amount})
        else:
            moved = await ctx.connection.execute(text(move), {"n": amount})
            if moved.rowcount == 0:
                raise StepRejected("not enough money")
            if style == "statement-then-refuse":
                raise StepRejected("changed its mind after writing")
        await ctx.write("INSERT INTO effects VALUES (:s, 'debit')", {"s": ctx.saga_id})

    @participant.command("credit")
    async def credit(ctx: StepContext) -> None:
        amount = int(ctx.payload["amount"])
        await ctx.write(
            "UPDATE accounts SET balance = balance + :n WHERE id = 'hot'", {"n": amount}
        )
        await ctx.write("INSERT INTO effects VALUES (:s, 'credit')", {"s": ctx.saga_id})

    @participant.command("note")
    async def note(ctx: StepContext) -> None:
        if ctx.payload.get("refuse_note"):
            raise StepRejected("no")

    return participant


async def test_a_held_write_survives_a_refusal_after_a_statement_in_its_batch(
    store: SqlSagaStore,
) -> None:
    # good holds its write; bad, in the same batch, writes on the connection and then
    # refuses. Rolling bad back must undo bad's write and only bad's.
    fused = Fused(store, [PAY], [bank(store)], workers=1)
    async with fused:
        ends = await asyncio.gather(
            fused.run("pay", {"style": "held", "amount": 5}, saga_id="good"),
            fused.run("pay", {"style": "statement-then-refuse", "amount": 7}, saga_id="bad"),
        )
    assert ends == ["completed", "compensated"]
    assert await effects(store) == [("good", "debit")]
    assert await balance(store) == 1000000 - 5


@pytest.mark.slow
async def test_sagas_sharing_a_hot_row_in_every_style_all_end_and_money_adds_up(
    store: SqlSagaStore,
) -> None:
    # Two workers; some handlers hold their write to the hot row, some write it on the
    # connection (so their transaction holds the row while it goes on), some write and
    # then refuse. None may wait for ever on the other, and every cent is accounted for.
    styles = ["held", "statement", "statement-then-refuse", "held", "statement"]
    plan = {f"s{i:03}": (styles[i % len(styles)], 1 + i % 7, i % 11 == 0) for i in range(300)}
    fused = Fused(store, [PAY], [bank(store)], workers=2, batch=16)
    async with fused:
        ends = await asyncio.wait_for(
            asyncio.gather(
                *(
                    fused.run("pay", {"style": s, "amount": n, "refuse_note": r}, saga_id=sid)
                    for sid, (s, n, r) in plan.items()
                )
            ),
            60,
        )
    done = await effects(store)
    spent = 0
    for (sid, (style, amount, refuse_note)), end in zip(plan.items(), ends, strict=True):
        mine = sorted(what for saga, what in done if saga == sid)
        if style == "statement-then-refuse":
            assert (end, mine) == ("compensated", []), sid
        elif refuse_note:
            assert (end, mine) == ("compensated", ["credit", "debit"]), sid
        else:
            assert (end, mine) == ("completed", ["debit"]), sid
            spent += amount
    assert await balance(store) == 1000000 - spent


HANGS = SagaDefinition(
    "hangs",
    steps=[
        Step(name="hold", participant="desk", command="hold", compensation="free", retry=ONCE),
        Step(
            name="wait",
            participant="desk",
            command="wait",
            kind=StepKind.PIVOT,
            timeout=timedelta(seconds=1),
            retry=TWICE,
        ),
    ],
)


def desk(store: SqlSagaStore) -> Participant:
    participant = Participant("desk", store)

    @participant.command("hold")
    async def hold(ctx: StepContext) -> None:
        await ctx.write("INSERT INTO effects VALUES (:s, 'hold')", {"s": ctx.saga_id})

    @participant.command("free")
    async def free(ctx: StepContext) -> None:
        await ctx.write("INSERT INTO effects VALUES (:s, 'free')", {"s": ctx.saga_id})

    @participant.command("wait")
    async def wait(ctx: StepContext) -> None:
        if ctx.payload.get("hang"):
            await ctx.connection.execute(
                text("INSERT INTO effects VALUES (:s, 'wait')"), {"s": ctx.saga_id}
            )
            await asyncio.sleep(3600)
        await ctx.write("INSERT INTO effects VALUES (:s, 'wait')", {"s": ctx.saga_id})

    return participant


async def test_a_hung_handler_is_cancelled_at_its_timeout_and_others_go_on(
    store: SqlSagaStore,
) -> None:
    fused = Fused(store, [HANGS], [desk(store)], timer_interval=0.05)
    async with fused:
        started = time.monotonic()
        hung = fused.run("hangs", {"hang": True}, saga_id="hung")
        fine = await asyncio.wait_for(fused.run("hangs", {}, saga_id="fine"), 10)
        # a pivot whose every attempt ran out of time: its outcome is for a person
        assert await asyncio.wait_for(hung, 15) == "needs_attention"
        took = time.monotonic() - started
    assert fine == "completed"
    assert took < 10  # two attempts of one second each, not an hour
    assert await effects(store) == [("fine", "hold"), ("fine", "wait"), ("hung", "hold")]
    assert fused.engine.retries["timeout"] >= 2


async def test_stop_returns_within_its_grace_while_a_handler_hangs(
    store: SqlSagaStore,
) -> None:
    fused = Fused(store, [HANGS], [desk(store)])
    await fused.runtime.start()
    await fused.begin("hangs", {"hang": True}, saga_id="hung")
    await asyncio.sleep(0.3)  # the handler is asleep inside its transaction now
    started = time.monotonic()
    await fused.runtime.stop(grace=0.5)
    assert time.monotonic() - started < 1.5
    # rolled back: the step that hung left nothing, and the next runtime runs it again
    assert ("hung", "wait") not in await effects(store)
    again = Fused(store, [HANGS], [desk(store)])
    async with again:
        assert await asyncio.wait_for(again.wait("hung"), 15) == "needs_attention"


QUEUED = SagaDefinition(
    "queued",
    steps=[
        Step(
            name="only",
            participant="desk",
            command="only",
            kind=StepKind.RETRIABLE,
            retry=RetryPolicy(attempts=3, backoff=timedelta(milliseconds=10)),
            timeout=timedelta(milliseconds=200),
        ),
    ],
)


async def test_a_deadline_passed_while_its_step_waits_in_memory_is_left_to_the_engine(
    store: SqlSagaStore,
) -> None:
    """The deadline bounds a try, not the wait for a batch: a tick leaves alone the
    sagas a fused engine holds queued or running (each try there is bounded by its
    handler's timeout), and times out the same saga once nothing holds it."""
    clock = FakeClock(1_700_000_000.0)
    orchestrator = Orchestrator(store, [QUEUED], clock=clock)
    await orchestrator.start("queued", {}, saga_id="q")
    queue = StepQueue(8)
    (row,) = await store.unsent([command_queue("desk")])
    queue.put_command(Envelope.from_bytes(row.message.body))
    assert queue.held() == {"q"}
    clock.advance(1.0)  # five times the step's timeout

    assert await orchestrator.tick(held=queue.held()) == 0
    assert (await store.get("q")).steps["only"].attempt == 1

    queue.take()  # a worker took it: busy, still held
    assert queue.held() == {"q"}
    assert await orchestrator.tick(held=queue.held()) == 0

    assert await orchestrator.tick() == 1  # nobody holds it: the try timed out
    kinds = [event.type for event in await store.history("q")]
    assert kinds.count("StepTimedOut") == 1
