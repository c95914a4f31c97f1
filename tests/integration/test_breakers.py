"""Saga-aware circuit breakers: a failing dependency defers steps instead of failing them."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from click.testing import Result
from typer.testing import CliRunner

from sagakit import (
    Participant,
    RetryPolicy,
    SagaDefinition,
    Step,
    StepContext,
    StepKind,
    StepRejected,
)
from sagakit.cli.app import app
from sagakit.engine.breakers import BreakerOpen, BreakerState, CircuitBreaker
from sagakit.model.describe import describe
from sagakit.model.events import decode
from sagakit.testing import SagaHarness

CHECKOUT = SagaDefinition(
    "gateway_checkout",
    steps=[
        Step(
            name="charge",
            participant="payment",
            command="charge",
            compensation="refund",
            retry=RetryPolicy(attempts=2, backoff=timedelta(milliseconds=50)),
        ),
        Step(name="ship", participant="shipping", command="ship", kind=StepKind.PIVOT),
    ],
)


class Gateway:
    """An outside payment gateway that can be down."""

    def __init__(self) -> None:
        self.down = False
        self.calls = 0

    async def authorize(self) -> None:
        self.calls += 1
        if self.down:
            raise ConnectionError("gateway: 503 Service Unavailable")


def add_checkout(harness: SagaHarness, breaker: CircuitBreaker, gateway: Gateway) -> None:
    """Payment (charging through ``gateway`` behind ``breaker``) and shipping, added to
    ``harness``."""
    payment = Participant("payment", harness.store, clock=harness.clock, breakers=[breaker])
    shipping = Participant("shipping", harness.store, clock=harness.clock)

    @payment.command("charge")
    async def charge(ctx: StepContext) -> None:
        async with ctx.breakers[breaker.name]:
            await gateway.authorize()

    @payment.command("refund")
    async def refund(ctx: StepContext) -> None:
        return None

    @shipping.command("ship")
    async def ship(ctx: StepContext) -> None:
        return None

    harness.add(payment, shipping)


async def show_breakers(harness: SagaHarness) -> Result:
    """``sagakit breakers`` on the harness's store, wide enough for whole rows."""
    return await asyncio.to_thread(
        CliRunner().invoke, app, ["breakers", "--db", harness.store.url], env={"COLUMNS": "200"}
    )


def test_the_breaker_opens_fails_fast_then_lets_one_trial_through() -> None:
    now = [0.0]
    breaker = CircuitBreaker("gw", failures=3, cooldown=timedelta(seconds=10), clock=lambda: now[0])
    for _ in range(3):
        breaker.check()
        breaker.failed()
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(BreakerOpen) as refused:
        breaker.check()
    assert 9.9 < refused.value.retry_after <= 10
    now[0] = 10.5
    breaker.check()  # the trial
    assert breaker.state is BreakerState.HALF_OPEN
    with pytest.raises(BreakerOpen):
        breaker.check()  # a second caller while the trial runs
    breaker.succeeded()
    assert breaker.state is BreakerState.CLOSED


async def test_a_failed_trial_reopens_the_breaker_and_defers_its_caller() -> None:
    now = [0.0]
    breaker = CircuitBreaker("gw", failures=1, cooldown=timedelta(seconds=10), clock=lambda: now[0])
    gateway = Gateway()
    gateway.down = True
    with pytest.raises(ConnectionError):  # a failure before the breaker knew: counted
        async with breaker:
            await gateway.authorize()
    assert breaker.state is BreakerState.OPEN
    now[0] = 10.0
    with pytest.raises(BreakerOpen) as raised:  # the trial: the outage is known now
        async with breaker:
            await gateway.authorize()
    assert isinstance(raised.value.__cause__, ConnectionError)
    assert raised.value.retry_after == 10.0
    assert "trial call failed: ConnectionError" in str(raised.value)
    assert breaker.state is BreakerState.OPEN and gateway.calls == 2
    now[0] = 20.0
    gateway.down = False
    async with breaker:
        await gateway.authorize()
    assert breaker.state is BreakerState.CLOSED


async def test_an_outage_defers_sagas_instead_of_compensating_them() -> None:
    gateway = Gateway()
    harness = SagaHarness([CHECKOUT])
    breaker = CircuitBreaker(
        "payment-gateway", failures=3, cooldown=timedelta(seconds=5), clock=harness.clock.now
    )
    add_checkout(harness, breaker, gateway)
    async with harness as h:
        gateway.down = True
        ids = [await h.start("gateway_checkout", {}, saga_id=f"o{i}") for i in range(20)]
        for _ in range(300):
            if breaker.state is BreakerState.OPEN:
                break
            await asyncio.sleep(0.01)
        assert breaker.state is BreakerState.OPEN
        await asyncio.sleep(0.3)  # let every saga meet the open breaker
        calls_while_open = gateway.calls
        assert calls_while_open <= 4  # three failures opened it; the rest never got through
        shown = await show_breakers(h)
        assert shown.exit_code == 0, shown.output
        assert "payment-gateway" in shown.output and "open" in shown.output
        gateway.down = False  # the gateway recovers; after the cooldown a trial gets through
        states = await h.run_until_terminal(ids, timeout=30)
        deferred = [e for e in await h.history("o19") if '"deferred":true' in e.data]
    assert {s.status.value for s in states.values()} == {"completed"}  # nobody compensated
    assert breaker.state is BreakerState.CLOSED
    assert gateway.calls <= calls_while_open + 20 + 2  # each saga charged once more at most
    assert deferred, "the open breaker should have deferred the step"


REFUNDS = SagaDefinition(
    "refused_checkout",
    steps=[
        Step(
            name="charge",
            participant="payment",
            command="charge",
            compensation="refund",
            compensation_retry=RetryPolicy(attempts=3, backoff=timedelta(milliseconds=50)),
        ),
        Step(name="ship", participant="shipping", command="ship", kind=StepKind.PIVOT),
    ],
)


async def test_an_outage_defers_refunds_instead_of_giving_up_on_them() -> None:
    """A compensation that meets an open breaker waits for the dependency like an action
    does: the outage spends none of its retry budget, so a refund owed during a long
    outage is made when the gateway is back, and the saga ends compensated, not in
    needs-attention after three quick tries."""
    gateway = Gateway()
    harness = SagaHarness([REFUNDS])
    breaker = CircuitBreaker(
        "payment-gateway", failures=2, cooldown=timedelta(seconds=5), clock=harness.clock.now
    )
    payment = Participant("payment", harness.store, clock=harness.clock, breakers=[breaker])
    shipping = Participant("shipping", harness.store, clock=harness.clock)
    refunds: list[str] = []

    @payment.command("charge")
    async def charge(ctx: StepContext) -> None:
        return None

    @payment.command("refund")
    async def refund(ctx: StepContext) -> None:
        async with ctx.breakers[breaker.name]:
            await gateway.authorize()
        refunds.append(ctx.saga_id)

    @shipping.command("ship")
    async def ship(ctx: StepContext) -> None:
        raise StepRejected("no courier")

    harness.add(payment, shipping)
    async with harness as h:
        gateway.down = True
        saga_id = await h.start("refused_checkout", {}, saga_id="r1")
        for _ in range(12):  # a minute of outage: far past three tries' backoff
            await h.advance(timedelta(seconds=5))
            await asyncio.sleep(0.02)
        history = await h.history(saga_id)
        assert (await h.store.statuses([saga_id]))[saga_id] == "compensating", history
        gateway.down = False
        states = await h.run_until_terminal([saga_id], timeout=30)
        lines = [describe(decode(e)) for e in await h.history(saga_id)]
    assert states[saga_id].status.value == "compensated"
    assert refunds == [saga_id]  # refunded once, after the outage
    assert any("deferred" in e.data for e in history if e.type == "CompensationFailed")
    assert any(line.startswith("charge: compensation deferred (") for line in lines), lines


async def test_a_breaker_that_never_tripped_is_listed_closed() -> None:
    harness = SagaHarness([CHECKOUT])
    breaker = CircuitBreaker("payment-gateway", clock=harness.clock.now)
    add_checkout(harness, breaker, Gateway())  # the gateway answers
    async with harness as h:
        saga_id = await h.start("gateway_checkout", {}, saga_id="healthy")
        await h.run_until_terminal([saga_id])
        shown = await show_breakers(h)
    assert shown.exit_code == 0, shown.output
    row = next(line for line in shown.output.splitlines() if "payment-gateway" in line)
    assert "closed" in row
