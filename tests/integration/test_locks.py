"""Semantic locks: held by a saga across its steps, respected by others, never leaked."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from sagakit import (
    Participant,
    RetryPolicy,
    SagaDefinition,
    Step,
    StepContext,
    StepKind,
    StepRejected,
    TransientError,
)
from sagakit.engine.locks import LockPolicy
from sagakit.stores.schema import saga_lock_waiters, saga_locks
from sagakit.stores.sqlite import SqliteSagaStore
from sagakit.testing import SagaHarness

PATIENT = RetryPolicy(attempts=50, backoff=timedelta(milliseconds=50), cap=timedelta(seconds=1))

BOOKING = SagaDefinition(
    "booking",
    steps=[
        Step(name="hold", participant="hotel", command="hold", compensation="free", retry=PATIENT),
        Step(name="pay", participant="bank", command="pay", compensation="refund"),
        Step(name="confirm", participant="hotel", command="confirm", kind=StepKind.PIVOT),
    ],
)


def wire(
    harness: SagaHarness,
    log: list[str],
    gate: dict[str, asyncio.Event],
    *,
    confirm_fails: bool = False,
) -> None:
    hotel = Participant("hotel", harness.store, clock=harness.clock)
    # The bank keeps its own database, so a slow payment holds only the bank's writer.
    bank_store = SqliteSagaStore(Path(harness.store.path).parent / "bank.db")
    bank = Participant("bank", bank_store, clock=harness.clock)

    @hotel.command("hold")
    async def hold(ctx: StepContext) -> None:
        await ctx.locks.acquire("room:7", policy=LockPolicy(ctx.payload["policy"]))
        log.append(f"{ctx.saga_id} holds")

    @hotel.command("free")
    async def free(ctx: StepContext) -> None:
        log.append(f"{ctx.saga_id} frees")

    @hotel.command("confirm")
    async def confirm(ctx: StepContext) -> None:
        if confirm_fails:
            raise TransientError("the hotel's system is down")
        await ctx.locks.ensure_held("room:7")  # re-read before the pivot
        log.append(f"{ctx.saga_id} confirmed")

    @bank.command("pay")
    async def pay(ctx: StepContext) -> None:
        if ctx.saga_id in gate:
            await gate[ctx.saga_id].wait()
        if ctx.payload.get("decline"):
            raise StepRejected("card declined")

    @bank.command("refund")
    async def refund(ctx: StepContext) -> None:
        return None

    harness.add(hotel, bank)


async def locks_left(harness: SagaHarness) -> tuple[int, int]:
    async with harness.store.unit() as unit:
        held = len((await unit.connection.execute(select(saga_locks))).all())
        waiting = len((await unit.connection.execute(select(saga_lock_waiters))).all())
    return held, waiting


async def locks_left_after_release(harness: SagaHarness) -> tuple[int, int]:
    """Locks and waiters left once the ended sagas' releases were handled: a saga's end
    sends its release to the participant as a message, which may still be on its way
    when the saga is already terminal (up to 5 s, then what is left)."""
    for _ in range(500):
        left = await locks_left(harness)
        if left == (0, 0):
            break
        await asyncio.sleep(0.01)
    return left


async def wait_for(harness: SagaHarness, saga_id: str, step: str) -> None:
    for _ in range(500):
        state = await harness.state(saga_id)
        if state.steps.get(step) and state.steps[step].status.value == "running":
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{saga_id} never reached {step}")


async def test_fail_fast_refuses_while_another_saga_holds_the_record() -> None:
    log: list[str] = []
    gate = {"first": asyncio.Event()}
    harness = SagaHarness([BOOKING])
    wire(harness, log, gate)
    async with harness as h:
        first = await h.start("booking", {"policy": "fail"}, saga_id="first")
        await wait_for(h, first, "pay")  # first holds room 7 and is paying, slowly
        second = await h.start("booking", {"policy": "fail"}, saga_id="second")
        [state] = (await h.run_until_terminal([second])).values()
        assert state.status.value == "compensated"
        assert "room:7 is held by saga first" in (state.reason or "")
        gate["first"].set()
        [state] = (await h.run_until_terminal([first])).values()
        assert state.status.value == "completed"
        assert await locks_left_after_release(h) == (0, 0)  # released when it completed
        history = [e.type for e in await h.history(first)]
        assert history[-2:] == ["LocksReleased", "SagaCompleted"]


async def test_retry_waits_for_the_holder_to_finish_then_takes_the_record() -> None:
    log: list[str] = []
    gate = {"first": asyncio.Event()}
    harness = SagaHarness([BOOKING])
    wire(harness, log, gate)
    async with harness as h:
        first = await h.start("booking", {"policy": "retry", "decline": True}, saga_id="first")
        await wait_for(h, first, "pay")
        second = await h.start("booking", {"policy": "retry"}, saga_id="second")
        await asyncio.sleep(0.2)
        assert (await h.state(second)).steps["hold"].status.value in {"retry_wait", "running"}
        gate["first"].set()  # first's card is declined: it compensates and lets go
        states = await h.run_until_terminal([first, second])
        assert states[first].status.value == "compensated"
        assert states[second].status.value == "completed"  # no dirty read: it waited
        assert log.index("first frees") < log.index("second holds")
        assert await locks_left_after_release(h) == (0, 0)


async def test_queue_serves_the_longest_waiting_saga_first() -> None:
    log: list[str] = []
    gate = {"first": asyncio.Event()}
    harness = SagaHarness([BOOKING])
    wire(harness, log, gate)
    async with harness as h:
        first = await h.start("booking", {"policy": "queue", "decline": True}, saga_id="first")
        await wait_for(h, first, "pay")
        waiting = []
        for name in ("second", "third", "fourth"):
            waiting.append(await h.start("booking", {"policy": "queue"}, saga_id=name))
            await asyncio.sleep(0.05)
        gate["first"].set()
        states = await h.run_until_terminal([first, *waiting], timeout=30)
        assert [states[w].status.value for w in waiting] == ["completed"] * 3
        holds = [line.split()[0] for line in log if line.endswith("holds")]
        assert holds == ["first", "second", "third", "fourth"]  # in the order they queued
        assert await locks_left_after_release(h) == (0, 0)


async def test_a_saga_left_for_a_person_does_not_keep_its_locks() -> None:
    harness = SagaHarness([BOOKING])
    wire(harness, [], {}, confirm_fails=True)
    async with harness as h:
        stuck = await h.start("booking", {"policy": "retry"}, saga_id="stuck")
        [state] = (await h.run_until_terminal([stuck])).values()
        assert state.status.value == "needs_attention"  # the pivot's outcome is unknown
        assert await locks_left_after_release(h) == (0, 0)


async def test_the_pivot_rereads_its_lock_and_refuses_if_it_was_lost() -> None:
    log: list[str] = []
    gate = {"first": asyncio.Event()}
    harness = SagaHarness([BOOKING])
    wire(harness, log, gate)
    async with harness as h:
        first = await h.start("booking", {"policy": "retry"}, saga_id="first")
        await wait_for(h, first, "pay")
        async with h.store.unit() as unit:  # the record is taken away behind the saga's back
            await unit.connection.execute(saga_locks.delete())
        gate["first"].set()
        [state] = (await h.run_until_terminal([first])).values()
        assert state.status.value == "compensated"
        assert "room:7 is no longer held by this saga" in (state.reason or "")
        assert "first confirmed" not in log
