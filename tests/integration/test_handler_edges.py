"""Handlers as users write them, on the ordinary runtime: one that hangs, one that hands
back what JSON cannot carry, one that raises, one in the database when the runtime
stops; and starts given what a saga cannot start with."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text

from sagakit import (
    Orchestrator,
    Participant,
    RetryPolicy,
    Runtime,
    SagaDefinition,
    SagaHandle,
    StartRequest,
    Step,
    StepContext,
    StepKind,
    open_transport,
    outcomes,
)
from sagakit.errors import DataError
from sagakit.ports import Transport
from sagakit.stores import open_store
from sagakit.stores.sql import SqlSagaStore
from sagakit.transports.memory import MemoryTransport
from sagakit.transports.rabbitmq import RabbitTransport
from tests.conftest import open_rabbit

FAST = RetryPolicy(attempts=2, backoff=timedelta(milliseconds=20))

TRIP = SagaDefinition(
    "trip",
    steps=[
        Step(name="seat", participant="desk", command="hold", compensation="free", retry=FAST),
        Step(
            name="pay",
            participant="desk",
            command="pay",
            compensation="refund",
            timeout=timedelta(seconds=1),
            retry=FAST,
        ),
        Step(name="mail", participant="desk", command="mail", kind=StepKind.PIVOT, retry=FAST),
    ],
)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[SqlSagaStore]:
    """One store for the orchestrator and the desk, as the README's tour has it."""
    opened = open_store(store_url)
    await opened.migrate()
    async with opened.unit() as unit:
        await unit.connection.execute(text("CREATE TABLE effects (saga TEXT, what TEXT)"))
    yield opened
    await opened.close()


async def effects(store: SqlSagaStore, saga: str) -> list[str]:
    async with store.unit() as unit:
        rows = await unit.connection.execute(
            text("SELECT what FROM effects WHERE saga = :s"), {"s": saga}
        )
        return sorted(r[0] for r in rows)


def desk(store: SqlSagaStore, pay: Any) -> Participant:
    participant = Participant("desk", store)

    async def record(ctx: StepContext, what: str) -> None:
        await ctx.connection.execute(
            text("INSERT INTO effects VALUES (:s, :w)"), {"s": ctx.saga_id, "w": what}
        )

    @participant.command("hold")
    async def hold(ctx: StepContext) -> None:
        await record(ctx, "hold")

    @participant.command("free")
    async def free(ctx: StepContext) -> None:
        await record(ctx, "free")

    @participant.command("refund")
    async def refund(ctx: StepContext) -> None:
        await record(ctx, "refund")

    @participant.command("mail")
    async def mail(ctx: StepContext) -> None:
        await record(ctx, "mail")

    async def paying(ctx: StepContext) -> Any:
        await record(ctx, "pay")
        return await pay(ctx)

    participant.on("pay", paying)
    return participant


async def run_trip(store: SqlSagaStore, pay: Any, saga_id: str, *, limit: float = 20) -> str:
    orchestrator = Orchestrator(store, [TRIP])
    async with Runtime(open_transport("memory://"), timer_interval=0.05).add(
        orchestrator, desk(store, pay)
    ):
        await orchestrator.start("trip", {"who": "ann"}, saga_id=saga_id)
        ended = await outcomes([SagaHandle(saga_id, store)], timeout=limit)
    return ended[saga_id]


async def test_a_hung_handler_is_cancelled_and_the_saga_still_compensates(
    store: SqlSagaStore,
) -> None:
    # Each try of pay sleeps for an hour inside its transaction. It is cancelled at its
    # step's timeout and its write rolled back; the seat, on the same participant, is
    # freed; the saga ends in seconds, on SQLite shared by everything as on PostgreSQL.
    async def hang(ctx: StepContext) -> None:
        await asyncio.sleep(3600)

    started = time.monotonic()
    assert await run_trip(store, hang, "hung") == "compensated"
    assert time.monotonic() - started < 10
    assert await effects(store, "hung") == ["free", "hold"]


async def test_a_reply_that_is_not_json_fails_the_step_at_once(
    store: SqlSagaStore, caplog: pytest.LogCaptureFixture
) -> None:
    tries = 0

    async def unserialisable(ctx: StepContext) -> dict[str, Any]:
        nonlocal tries
        tries += 1
        return {"receipt": {"total": Decimal("9.99")}}

    started = time.monotonic()
    assert await run_trip(store, unserialisable, "odd") == "compensated"
    assert time.monotonic() - started < 5  # not the step's timeout, nor a retry
    assert tries == 1
    assert await effects(store, "odd") == ["free", "hold"]  # pay's own write rolled back
    async with store.unit() as unit:
        state = (await unit.load(["odd"])).states["odd"]
    assert state.reason is not None
    assert "pay" in state.reason
    assert "['receipt']['total']: Decimal is not a JSON value" in state.reason


async def test_a_reply_that_is_not_a_dict_fails_the_step_naming_it(store: SqlSagaStore) -> None:
    async def listing(ctx: StepContext) -> list[int]:
        return [1, 2]

    assert await run_trip(store, listing, "list") == "compensated"
    async with store.unit() as unit:
        state = (await unit.load(["list"])).states["list"]
    assert state.reason is not None
    assert "the reply of pay (desk.pay) is a list" in state.reason


async def test_an_unexpected_exception_logs_its_traceback_once_per_attempt(
    store: SqlSagaStore, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(ctx: StepContext) -> None:
        raise ValueError("the card reader is on fire")

    with caplog.at_level(logging.ERROR, logger="sagakit.participant.desk"):
        assert await run_trip(store, broken, "fire") == "compensated"
    raised = [r for r in caplog.records if "the card reader is on fire" in r.getMessage()]
    assert [r.attempt for r in raised] == [1, 2]  # type: ignore[attr-defined]
    for record in raised:
        assert record.saga_id == "fire"  # type: ignore[attr-defined]
        assert record.step == "pay"  # type: ignore[attr-defined]
        assert record.exc_info is not None
        assert record.exc_info[0] is ValueError


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"price": Decimal("9.99")}, "start data['price']: Decimal is not a JSON value"),
        ({"seats": {1, 2}}, "start data['seats']: set is not a JSON value"),
        ({"ratio": float("nan")}, "start data['ratio']: float nan is not a JSON value"),
        ({"when": (2026, 1)}, "start data['when']: tuple is not a JSON value"),
        ([1, 2], "start data must be a dict of JSON values, not list"),
        (None, "start data must be a dict of JSON values, not NoneType"),
    ],
)
async def test_a_start_refuses_data_json_would_change(
    sqlite_url: str, data: Any, message: str
) -> None:
    store = open_store(sqlite_url)
    orchestrator = Orchestrator(store, [TRIP])
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]")):
        await orchestrator.start("trip", data)
    await store.close()


async def test_a_start_refuses_an_empty_saga_id_and_takes_the_definition_itself(
    sqlite_url: str,
) -> None:
    store = open_store(sqlite_url)
    orchestrator = Orchestrator(store, [TRIP])
    with pytest.raises(DataError, match="saga_id must be a non-empty string"):
        await orchestrator.start("trip", {}, saga_id="")
    with pytest.raises(TypeError, match="by its definition's name or its SagaDefinition"):
        await orchestrator.start(42, {})  # type: ignore[arg-type]
    assert await orchestrator.start(TRIP, {}, saga_id="by-object") == "by-object"
    assert (await store.statuses(["by-object"]))["by-object"] == "running"
    await store.close()


def test_a_handler_that_is_not_async_is_refused_when_registered(sqlite_url: str) -> None:
    participant = Participant("desk", open_store(sqlite_url))

    def plain(ctx: StepContext) -> None:
        return None

    with pytest.raises(TypeError, match=r"desk\.hold .*must be an async function"):
        participant.on("hold", plain)  # type: ignore[arg-type]


@pytest.mark.postgres
@pytest.mark.parametrize("transport", ["memory", "amqp"])
async def test_stop_returns_within_its_grace_while_a_handler_waits_in_the_database(
    pg_url: str, transport: str, amqp_url: str
) -> None:
    # A SIGTERM during a slow query: the stop returns within its grace, the step's
    # transaction is rolled back, and the command is not lost: the next start runs it.
    store = open_store(pg_url)
    await store.migrate()
    async with store.unit() as unit:
        await unit.connection.execute(text("CREATE TABLE effects (saga TEXT, what TEXT)"))
    slow = {"on": True}

    async def pay(ctx: StepContext) -> None:
        if slow["on"]:
            await ctx.connection.execute(text("SELECT pg_sleep(30)"))

    first: Transport = MemoryTransport()
    if transport == "amqp":
        first = await open_rabbit(amqp_url)
    orchestrator = Orchestrator(store, [TRIP])
    runtime = Runtime(first).add(orchestrator, desk(store, pay))
    await runtime.start()
    await orchestrator.start("trip", {}, saga_id="slow")
    for _ in range(100):  # until the handler is in its sleep
        if "pay" in await effects_seen(store, "slow"):
            break
        await asyncio.sleep(0.05)
    started = time.monotonic()
    await runtime.stop(grace=1.0)
    assert time.monotonic() - started < 2.5
    slow["on"] = False
    second: Transport = MemoryTransport()
    if isinstance(first, RabbitTransport):  # the same queues, where the command waits
        second = await open_rabbit(amqp_url, prefix=first.prefix)
    again = Runtime(second, timer_interval=0.05).add(Orchestrator(store, [TRIP]), desk(store, pay))
    async with again:
        ended = await outcomes([SagaHandle("slow", store)], timeout=20)
    assert ended["slow"] == "completed"
    assert await effects(store, "slow") == ["hold", "mail", "pay"]
    if isinstance(second, RabbitTransport):
        await second.teardown()
    await store.close()


async def effects_seen(store: SqlSagaStore, saga: str) -> list[str]:
    """What another transaction is doing right now, on PostgreSQL: the statements that
    are running for this saga (a handler inside pg_sleep shows its step)."""
    async with store.unit() as unit:
        rows = await unit.connection.execute(
            text(
                "SELECT query FROM pg_stat_activity WHERE state = 'active' "
                "AND query LIKE '%pg_sleep%' AND pid <> pg_backend_pid()"
            )
        )
        return ["pay" for _ in rows]


QUICK = SagaDefinition(
    "quick",
    steps=[
        Step(
            name="go",
            participant="desk",
            command="go",
            kind=StepKind.PIVOT,
            timeout=timedelta(seconds=20),
        )
    ],
)


async def test_a_slow_handler_leaves_its_batch_and_the_others_go_on(
    store: SqlSagaStore,
) -> None:
    # Twelve commands arrive together; one handler takes seconds. The batch waits for
    # it only a moment (a share of the shortest timeout in it), then runs again
    # without it: the eleven end while the slow one still runs, alone, with its whole
    # budget, and its effect is there once.
    participant = Participant("desk", store)
    slow_started = asyncio.Event()

    @participant.command("go")
    async def go(ctx: StepContext) -> None:
        if ctx.payload["slow"]:
            slow_started.set()
            await asyncio.sleep(4)
        await ctx.connection.execute(
            text("INSERT INTO effects VALUES (:s, 'go')"), {"s": ctx.saga_id}
        )

    orchestrator = Orchestrator(store, [QUICK])
    async with Runtime(open_transport("memory://"), timer_interval=0.05).add(
        orchestrator, participant
    ):
        ids = await orchestrator.start_many(
            [StartRequest("quick", {"slow": i == 0}, saga_id=f"q{i}") for i in range(12)]
        )
        await outcomes([SagaHandle(i, store) for i in ids[1:]], timeout=15)
        assert (await store.statuses(["q0"]))["q0"] == "running"
        assert slow_started.is_set()
        assert (await outcomes([SagaHandle("q0", store)], timeout=15))["q0"] == "completed"
    for saga_id in ids:
        assert await effects(store, saga_id) == ["go"]
