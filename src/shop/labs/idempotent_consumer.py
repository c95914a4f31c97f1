"""Lab 4: the idempotent consumer.

Brokers deliver at least once, so a participant must expect the same command again.
This lab delivers one ``charge`` command, the very same message, ten times to the
shop's payment service: five times one after another, then five at once to two
consumers competing for the payment queue (as two replicas would). The inbox row,
written in the same transaction as the charge and keyed by saga, step and direction,
lets the first delivery charge and turns the other nine into "duplicate ignored",
each answered with the first delivery's stored reply.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import select

from sagakit.engine.participant import Participant
from sagakit.engine.runtime import Runtime
from sagakit.model.messages import (
    Envelope,
    MessageKind,
    Outgoing,
    ReplyBody,
    TransportMessage,
    command_queue,
    new_id,
)
from sagakit.ports import Delivery
from sagakit.stores.sql import SqlSagaStore
from shop.labs.kit import (
    Narrator,
    lab_transport,
    never_published,
    open_shop,
    rows,
    table,
    unsent,
    until,
)
from shop.services.payment import PaymentService, accounts, payments
from shop.world import default_world, dollars

TITLE = "The idempotent consumer"
LESSON = (
    "One charge command delivered 10 times to the payment service: one charge, nine "
    "duplicates ignored, the balance moved once."
)

DELIVERIES = 10
ONE_BY_ONE = 5
REPLY_QUEUE = "sagakit.replies.lab"
CUSTOMER = "c-grace"
AMOUNT = 50_00
ORDER_ID = "order-401"


class Replica:
    """A consumer of the payment queue that counts what it was handed."""

    def __init__(self, participant: Participant, name: str) -> None:
        self.participant = participant
        self.name = name
        self.store = participant.store
        self.queue = participant.queue
        self.bindings: tuple[str, ...] = ()
        self.handled = 0

    async def handle(self, deliveries: Sequence[Delivery]) -> None:
        self.handled += len(deliveries)
        await self.participant.handle(deliveries)


class ReplyCollector:
    """Stands where the orchestrator would: keeps every reply the payment service sent."""

    def __init__(self, store: SqlSagaStore) -> None:
        self.store = store
        self.queue = REPLY_QUEUE
        self.bindings: tuple[str, ...] = ()
        self.replies: dict[str, ReplyBody] = {}

    async def handle(self, deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            envelope = Envelope.from_bytes(delivery.message.body)
            self.replies[envelope.message_id] = ReplyBody.model_validate(envelope.payload)


def charge_command() -> TransportMessage:
    """The command the orchestrator sends for step charge_payment of order #401."""
    envelope = Envelope(
        message_id=new_id(),
        type="payment.charge",
        kind=MessageKind.COMMAND,
        saga_id=ORDER_ID,
        created_at=time.time(),
        reply_to=REPLY_QUEUE,
        step="charge_payment",
        op="action",
        attempt=1,
        payload={
            "order_id": ORDER_ID,
            "number": 401,
            "customer_id": CUSTOMER,
            "amount_cents": AMOUNT,
            "item": "desk lamp",
            "quantity": 2,
        },
    )
    return TransportMessage.of(Outgoing(command_queue("payment"), envelope))


async def _balance(store: SqlSagaStore) -> int:
    query = select(accounts.c.balance_cents).where(accounts.c.customer_id == CUSTOMER)
    return int((await rows(store, query))[0].balance_cents)


async def run(directory: Path, *, story: bool) -> dict[str, Any]:
    say = Narrator(story=story)
    shop = await open_shop(directory, default_world(orders=1))
    store = shop.stores["payment"]
    first = Replica(shop.services["payment"].participant, "a")
    second = Replica(PaymentService(store).participant, "b")
    collector = ReplyCollector(store)
    message = charge_command()
    short = message.message_id[:8]
    try:
        before = await _balance(store)
        transport = lab_transport()
        # prefetch 1: each consumer takes one delivery at a time, so the two really compete
        async with Runtime(transport, prefetch=1).add(first, second, collector):
            for n in range(1, ONE_BY_ONE + 1):
                again = " (the same message again)" if n > 1 else ""
                say.say(f"delivery {n} of {DELIVERIES}: message {short}, payment.charge{again}")
                await transport.publish([message])
            say.say(
                f"deliveries {ONE_BY_ONE + 1}-{DELIVERIES}: the same message {short}, all at "
                "once, to two consumers competing for the payment queue"
            )
            await transport.publish([message] * (DELIVERIES - ONE_BY_ONE))
            await until(
                lambda: len(collector.replies) >= DELIVERIES,
                timeout=15,
                what=f"{DELIVERIES} replies",
            )
        after = await _balance(store)
        moved = await rows(store, select(payments).where(payments.c.order_id == ORDER_ID))
        left = await unsent(shop)
    finally:
        await shop.close()
    replies = list(collector.replies.values())
    duplicates = sum(1 for r in replies if r.duplicate)
    charges = sum(1 for p in moved if p.kind == "charge")
    answers = Counter(r.model_dump_json(exclude={"duplicate"}) for r in replies)
    say.say(f"consumer a handled {first.handled} deliveries, consumer b {second.handled}")
    say.show(
        table(
            "what the payment service did",
            ["deliveries", "charges (rows)", "duplicates ignored", "balance moved"],
            [
                (
                    first.handled + second.handled,
                    charges,
                    duplicates,
                    f"{dollars(before - after)} (one charge: {dollars(AMOUNT)})",
                )
            ],
        )
    )
    figures: dict[str, Any] = {
        "message_id": message.message_id,
        "deliveries": first.handled + second.handled,
        "handled_by": {first.name: first.handled, second.name: second.handled},
        "charges": charges,
        "replies": len(replies),
        "duplicates": duplicates,
        "distinct_answers": len(answers),
        "charge_cents": AMOUNT,
        "balance_before_cents": before,
        "balance_after_cents": after,
        "balance_moved_cents": before - after,
    }
    problems = []
    if charges != 1:
        problems.append(f"{charges} charges for one command")
    if duplicates != DELIVERIES - 1:
        problems.append(f"{duplicates} duplicates ignored, not {DELIVERIES - 1}")
    if before - after != AMOUNT:
        problems.append(f"the balance moved {before - after}, not {AMOUNT}")
    if len(answers) != 1:
        problems.append("the duplicates were not answered with the first reply")
    problems.extend(never_published(left))
    figures["problems"] = problems
    return figures
