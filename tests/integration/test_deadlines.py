"""Deadlines: the database's clock, reapers that never double-fire, and zombie replies."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from sagakit import (
    Orchestrator,
    Participant,
    RetryPolicy,
    SagaDefinition,
    StartRequest,
    Step,
    StepContext,
)
from sagakit.stores import open_store
from sagakit.stores.sqlite import SqliteSagaStore
from sagakit.testing import SagaHarness, forward_only
from tests.integration.shop import create_effects, effects, order_participants
from tests.sagas import ORDER

QUICK = SagaDefinition(
    "quick",
    steps=[
        Step(
            name="first",
            participant="nobody",
            command="do",
            compensation="undo",
            timeout=timedelta(milliseconds=200),
            retry=RetryPolicy(attempts=2),
        ),
    ],
)


async def test_deadlines_come_from_the_database_clock(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(pg_url)
    await store.migrate()
    orchestrator = Orchestrator(store, [QUICK])  # no clock of its own
    monkeypatch.setattr(time, "time", lambda: 0.0)  # this process's clock is wildly wrong
    await orchestrator.start("quick", {}, saga_id="s")
    monkeypatch.undo()
    state = await store.get("s")
    assert abs(state.steps["first"].deadline - (time.time() + 0.2)) < 5  # type: ignore[operator]
    await store.close()


async def test_two_reapers_at_once_time_each_saga_out_once(pg_url: str) -> None:
    first, second = open_store(pg_url), open_store(pg_url)
    await first.migrate()
    reapers = [Orchestrator(first, [QUICK]), Orchestrator(second, [QUICK])]
    ids = await reapers[0].start_many(
        [StartRequest("quick", {}, saga_id=f"s{i}") for i in range(60)]
    )
    await asyncio.sleep(0.4)  # every first attempt is past its deadline

    async def reap(orchestrator: Orchestrator) -> None:
        for _ in range(40):
            await orchestrator.tick(limit=7)  # small batches, so the two interleave
            await asyncio.sleep(0.01)

    await asyncio.gather(*(reap(r) for r in reapers))
    for saga_id in ids:
        history = await first.history(saga_id)
        timed_out = Counter((e.type, e.data) for e in history if e.type == "StepTimedOut")
        assert all(n == 1 for n in timed_out.values()), saga_id
        assert forward_only(saga_id, history) == []
    await first.close()
    await second.close()


async def test_a_late_reply_after_the_saga_gave_up_is_a_zombie_and_money_nets_out(
    tmp_path: Path,
) -> None:
    """The payment service is slow: the orchestrator times the charge out and compensates;
    then the charge commits after all. Its success is recorded as a zombie, and the refund
    the compensation carries undoes it."""
    slow = asyncio.Event()
    harness = SagaHarness([ORDER])
    payments_store = SqliteSagaStore(tmp_path / "payments.db")
    payment = Participant("payment", payments_store, clock=harness.clock)

    @payment.command("charge")
    async def charge(ctx: StepContext) -> None:
        await slow.wait()  # holds only the payment service's own database
        await ctx.connection.execute(
            text("INSERT INTO effects VALUES (:s, 'charge', 'action')"), {"s": ctx.saga_id}
        )

    @payment.command("refund")
    async def refund(ctx: StepContext) -> None:
        await ctx.connection.execute(
            text("INSERT INTO effects VALUES (:s, 'charge', 'compensation')"), {"s": ctx.saga_id}
        )

    others = [p for p in order_participants(harness.store) if p.name != "payment"]
    harness.add(payment, *others)
    async with harness as h:
        await create_effects(h.store)
        await create_effects(payments_store)
        saga_id = await h.start("order", {}, saga_id="late")
        for _ in range(200):
            if (await h.state(saga_id)).steps.get("charge"):
                break
            await asyncio.sleep(0.01)
        for _ in range(3):  # three tries, each past its deadline
            await h.advance(timedelta(seconds=31))
            await h.advance(timedelta(seconds=1))
        state = await h.state(saga_id)
        assert state.status.value == "compensating"
        assert "charge failed: timed out after 3 attempts" in (state.reason or "")
        slow.set()  # the first charge finally goes through
        [final] = (await h.run_until_terminal([saga_id])).values()
        history = await h.history(saga_id)
        assert final.status.value == "compensated"
        assert any(e.type == "ReplyIgnored" and "zombie" in e.data for e in history), [
            e.type for e in history
        ]
        money = await effects(payments_store)
        assert money == {("late", "charge", "action"): 1, ("late", "charge", "compensation"): 1}
        stock = await effects(h.store)
        assert (
            stock[("late", "reserve", "action")] == stock[("late", "reserve", "compensation")] == 1
        )
    await payments_store.close()
