"""Lab 7: timeouts and zombies: the payment service stalls, the orchestrator gives up.

A participant that does not answer is the hardest failure: the orchestrator cannot
tell a slow service from a dead one. So every step has a deadline, stored with the
saga and read by a timer loop against the database's clock; when it passes, the step
counts as failed and the saga follows the step's policy - here, with one attempt
allowed, it compensates and the order is cancelled.

The payment service was only slow: its charge commits after the saga gave up. Its
reply arrives as a *zombie*: recorded in the saga log, never moving the saga back. And
because the saga compensates a step whose outcome it does not know, the refund that
undoes a charge that might have happened is part of the compensation: the money nets
out whichever way the race went.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from sqlalchemy import select

from sagakit import Orchestrator, RetryPolicy, Runtime, SagaDefinition, outcomes
from sagakit.cli import timeline
from sagakit.ports import Delivery
from sagakit_shop.labs.kit import (
    Narrator,
    lab_transport,
    never_published,
    open_shop,
    rows,
    unsent,
    until,
)
from sagakit_shop.saga import ORDER_SAGA
from sagakit_shop.services.inventory import items
from sagakit_shop.services.payment import PaymentService, accounts, payments
from sagakit_shop.world import default_world, dollars

TITLE = "Timeouts and zombies"
LESSON = (
    "The payment service stalls past its deadline: the orchestrator gives up and the "
    "order is cancelled; the late charge is a zombie, and its refund nets the money out."
)

SLOW_STEP = "charge_payment"
DEADLINE = timedelta(milliseconds=500)
SLEEP_S = 1.5
CUSTOMER, SKU = "c-ada", "lamp"

#: The shop's order saga with a tight deadline on the charge and no second try.
IMPATIENT_ORDER = SagaDefinition(
    ORDER_SAGA.name,
    version=ORDER_SAGA.version,
    steps=[
        dataclasses.replace(step, timeout=DEADLINE, retry=RetryPolicy(attempts=1))
        if step.name == SLOW_STEP
        else step
        for step in ORDER_SAGA.steps
    ],
)


class SleepyPaymentService(PaymentService):
    """The shop's payment service, stalled for a while before it takes the charge (a
    long pause of its process, a backed-up queue): the charge itself is quick, but it
    starts after the saga's deadline.

    A handler that itself runs past its step's timeout is cancelled and rolled back (it
    could not commit late); a command that starts late runs in full. That late commit
    is what makes a zombie."""

    def register(self) -> None:
        super().register()
        # The whole service is stalled, not one of its batches: the refund that comes
        # while it is stalled waits behind the charge, as it would in a paused process.
        self.participant.concurrency = 1
        handle = self.participant.handle

        async def stalled(deliveries: Sequence[Delivery]) -> None:
            if any(b'"payment.charge"' in d.message.body for d in deliveries):
                self.participant.log.info(f"Payment service stalls for {SLEEP_S}s")
                await asyncio.sleep(SLEEP_S)
            await handle(deliveries)

        self.participant.handle = stalled  # type: ignore[method-assign]


async def run(directory: Path, *, story: bool) -> dict[str, Any]:
    say = Narrator(story=story)
    shop = await open_shop(
        directory, default_world(orders=1), replace={"payment": SleepyPaymentService}
    )
    # The same saga, with the lab's deadline; rules off, so nothing waits for a person.
    shop.orchestrator = Orchestrator(shop.saga_store, [IMPATIENT_ORDER], rules=False)
    payment, inventory = shop.stores["payment"], shop.stores["inventory"]
    try:
        balance_before = await _balance(payment)
        stock_before = await _on_hand(inventory)
        say.say(
            f"{SLOW_STEP} must answer within {DEADLINE.total_seconds():g}s; "
            f"the payment service will take {SLEEP_S:g}s."
        )
        async with Runtime(lab_transport()).add(*shop.components()):
            placed = await shop.place(CUSTOMER, SKU, 1)
            started = time.monotonic()
            statuses = await outcomes([shop.saga(placed.order_id)], timeout=30)
            gave_up_in = round(time.monotonic() - started, 3)

            async def zombie_seen() -> bool:
                history = await shop.saga_store.history(placed.order_id)
                return any(e.type == "ReplyIgnored" and "zombie" in e.data for e in history)

            # The saga has ended; the sleeping charge has not. Wait for its late reply.
            await until(zombie_seen, timeout=SLEEP_S + 10, what="the late charge's reply")
            await until(lambda: _all_published(shop), timeout=10, what="every outbox row published")
        history = await shop.saga_store.history(placed.order_id)
        state = await shop.saga_store.get(placed.order_id)
        moved = await rows(payment, select(payments).where(payments.c.order_id == placed.order_id))
        balance_after = await _balance(payment)
        stock_after = await _on_hand(inventory)
        order = await shop.orders.get(placed.order_id)
        left = await unsent(shop)
    finally:
        await shop.close()
    if story:
        Console(stderr=True).print(timeline(placed.order_id, history, state))
    requested = next(
        e.recorded_at
        for e in history
        if e.type == "StepRequested" and json.loads(e.data)["step"] == SLOW_STEP
    )
    timed_out = [
        e for e in history if e.type == "StepTimedOut" and json.loads(e.data)["step"] == SLOW_STEP
    ]
    zombies = [json.loads(e.data) for e in history if e.type == "ReplyIgnored"]
    charged = sum(p.amount_cents for p in moved if p.kind == "charge")
    refunded = sum(p.amount_cents for p in moved if p.kind == "refund")
    status = statuses[placed.order_id]
    figures: dict[str, Any] = {
        "order_id": placed.order_id,
        "deadline_s": DEADLINE.total_seconds(),
        "payment_sleep_s": SLEEP_S,
        "timed_out_after_s": round(timed_out[0].recorded_at - requested, 3) if timed_out else None,
        "saga_ended_after_s": gave_up_in,
        "saga_status": status,
        "order_status": order["status"] if order else None,
        "reason": state.reason,
        "zombie_replies": [{"step": z["step"], "ok": z["ok"], "why": z["why"]} for z in zombies],
        "charged_cents": charged,
        "refunded_cents": refunded,
        "balance_before_cents": balance_before,
        "balance_after_cents": balance_after,
        "stock_before": stock_before,
        "stock_after": stock_after,
        "events": [e.type for e in history],
        "unsent_outbox_rows": left,
    }
    say.say(
        f"The saga gave up on {SLOW_STEP} after {figures['timed_out_after_s']}s and ended "
        f"{status}; the late charge of {dollars(charged)} was refunded "
        f"({dollars(refunded)}): the balance is back to {dollars(balance_after)}."
    )
    figures["problems"] = _problems(figures, zombies) + never_published(left)
    return figures


def _problems(f: dict[str, Any], zombies: list[dict[str, Any]]) -> list[str]:
    """Every way the run departed from the lesson."""
    problems = []
    if f["timed_out_after_s"] is None:
        problems.append(f"{SLOW_STEP} never timed out")
    elif f["timed_out_after_s"] >= SLEEP_S:
        problems.append("the timeout fired only after the payment service answered")
    if f["saga_status"] != "compensated" or f["order_status"] != "rejected":
        problems.append(f"the saga ended {f['saga_status']}, the order {f['order_status']}")
    if not any(z["step"] == SLOW_STEP and "zombie" in z["why"] for z in zombies):
        problems.append("the late reply was not recorded as a zombie")
    charged, refunded = f["charged_cents"], f["refunded_cents"]
    before, after = f["balance_before_cents"], f["balance_after_cents"]
    if charged != refunded or before != after:
        problems.append(
            f"money does not net out: charged {charged}, refunded {refunded}, "
            f"balance {before} -> {after}"
        )
    if f["stock_before"] != f["stock_after"]:
        problems.append(f"stock moved from {f['stock_before']} to {f['stock_after']}")
    return problems


async def _all_published(shop: Any) -> bool:
    return not any((await unsent(shop)).values())


async def _balance(store: Any) -> int:
    found = await rows(
        store, select(accounts.c.balance_cents).where(accounts.c.customer_id == CUSTOMER)
    )
    return int(found[0].balance_cents)


async def _on_hand(store: Any) -> int:
    found = await rows(store, select(items.c.on_hand).where(items.c.sku == SKU))
    return int(found[0].on_hand)
