"""Lab 2: choreography, compensation: ordering 1000 with 10 in stock.

The shop's own saga reserves stock before it charges, so a stock failure never needs a
refund. This lab choreographs a saga of its own from the same services' commands, with
the payment first: create the order, charge the card, reserve the stock. The stock
refuses (1000 asked, 10 on hand) and publishes its failure; the payment service, which
listens for that failure as well as for the forward event, refunds; the order service
hears the refund and rejects the order. Nobody coordinates any of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from sagakit import Choreography, Runtime, SagaDefinition, outcomes
from sagakit.ports import UnitOfWork
from sagakit.stores.sql import SqlSagaStore
from sagakit_shop.labs.kit import (
    EventTap,
    Narrator,
    SeenEvent,
    lab_transport,
    never_published,
    open_shop,
    rows,
    table,
    unsent,
    until,
)
from sagakit_shop.saga import ORDER_SAGA
from sagakit_shop.services.inventory import items
from sagakit_shop.services.payment import accounts, payments
from sagakit_shop.world import Item, World, default_world, dollars

TITLE = "Choreography: compensation"
LESSON = (
    "Ordering 1000 with 10 in stock, in a saga that charges before it reserves: the "
    "stock's failure event makes the payment service refund and the order service reject."
)

#: The shop's steps, reordered so the charge comes before the stock (as in the lesson).
PREPAID_ORDER = SagaDefinition(
    "prepaid_order",
    steps=[
        ORDER_SAGA.step("create_order"),
        ORDER_SAGA.step("charge_payment"),
        ORDER_SAGA.step("reserve_stock"),
    ],
)

WIDGET = Item("widget", "CoolWidget", 5, 10)  # 1000 of them cost $50.00; 10 on hand
CUSTOMER = "c-ada"
QUANTITY = 1000


def lab_world() -> World:
    base = default_world(orders=1)
    return World(base.customers, (*base.items, WIDGET))


async def run(directory: Path, *, story: bool) -> dict[str, Any]:
    say = Narrator(story=story)
    shop = await open_shop(directory, lab_world())
    choreography = Choreography([PREPAID_ORDER])
    say.show(
        table(
            "who listens to what (compiled from the definition)",
            ["event", "service", "runs"],
            [
                (r.trigger, r.step.participant, f"{r.command} ({r.op} of {r.step.name})")
                for r in choreography.routes
            ],
        )
    )

    def heard(event: SeenEvent) -> None:
        why = f" ({event.reason})" if event.reason and event.key.endswith(".failed") else ""
        say.say(f"{event.key}{why}", who="bus")

    tap = EventTap(shop.saga_store, [PREPAID_ORDER], on_event=heard)

    async def start(unit: UnitOfWork, order_id: str, data: dict[str, Any]) -> None:
        await choreography.start_in(unit, PREPAID_ORDER.name, data, saga_id=order_id, key=order_id)

    followers = [
        choreography.follow(shop.services[name].participant)
        for name in ("order", "payment", "inventory")
    ]
    payment_store, inventory_store = shop.stores["payment"], shop.stores["inventory"]
    try:
        before = await _balance(payment_store)
        say.say(
            f"{QUANTITY} x {WIDGET.name} ordered with {WIDGET.stock} in stock; "
            "the card is charged before the stock is looked at."
        )
        tracker = choreography.tracker(shop.saga_store)
        async with Runtime(lab_transport()).add(tracker, *followers, tap):
            placed = await shop.orders.place(CUSTOMER, WIDGET.sku, QUANTITY, start=start)
            statuses = await outcomes([shop.saga(placed.order_id)], timeout=30)
            if statuses[placed.order_id] == "compensated":
                last = f"{PREPAID_ORDER.name}.{PREPAID_ORDER.steps[0].name}.compensated"
                await until(
                    lambda: last in tap.routing_keys(), timeout=10, what=f"the tap seeing {last}"
                )
        moved = await rows(
            payment_store, select(payments).where(payments.c.order_id == placed.order_id)
        )
        after = await _balance(payment_store)
        order = await shop.orders.get(placed.order_id)
        left = await unsent(shop)
        stock = (await rows(inventory_store, select(items).where(items.c.sku == WIDGET.sku)))[0]
    finally:
        await shop.close()
    charged = sum(p.amount_cents for p in moved if p.kind == "charge")
    refunded = sum(p.amount_cents for p in moved if p.kind == "refund")
    status = statuses[placed.order_id]
    say.show(
        table(
            f"the payment service's books for {placed.order_id}",
            ["kind", "amount"],
            [(p.kind, dollars(p.amount_cents)) for p in moved],
        )
    )
    figures: dict[str, Any] = {
        "order_id": placed.order_id,
        "ordered": QUANTITY,
        "in_stock": WIDGET.stock,
        "events": [e.key for e in tap.seen if e.saga_id == placed.order_id],
        "charged_cents": charged,
        "refunded_cents": refunded,
        "balance_before_cents": before,
        "balance_after_cents": after,
        "stock_on_hand_after": stock.on_hand,
        "order_status": order["status"] if order else None,
        "order_reason": order["reason"] if order else None,
        "saga_status": status,
        "unsent_outbox_rows": left,
    }
    problems = []
    if not charged or charged != refunded:
        problems.append(f"charged {charged} but refunded {refunded}")
    if figures["order_status"] != "rejected":
        problems.append(f"the order is {figures['order_status']}, not rejected")
    if status != "compensated":
        problems.append(f"the saga ended {status}, not compensated")
    if before != after:
        problems.append(f"the balance moved from {before} to {after}")
    problems.extend(never_published(left))
    figures["problems"] = problems
    return figures


async def _balance(store: SqlSagaStore) -> int:
    found = await rows(
        store, select(accounts.c.balance_cents).where(accounts.c.customer_id == CUSTOMER)
    )
    return int(found[0].balance_cents)
