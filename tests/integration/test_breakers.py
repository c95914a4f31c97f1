"""Saga-aware circuit breakers: a failing dependency defers steps instead of failing them."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from click.testing import Result
from typer.testing import CliRunner

from sagakit import Participant, RetryPolicy, SagaDefinition, Step, StepContext, StepKind
from sagakit.breakers import BreakerOpen, BreakerState, CircuitBreaker
from sagakit.cli.app import app
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
