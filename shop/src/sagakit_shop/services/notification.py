"""The notification service: tells the customer. Retriable: a busy mail server only
delays the message, it never undoes the order."""

from __future__ import annotations

import time

from sqlalchemy import Column, Float, MetaData, String, Table, Text, insert

from sagakit import StepContext, TransientError
from sagakit.observe.redaction import shown
from sagakit_shop.contracts import NotifyCustomer
from sagakit_shop.services.base import Service

metadata = MetaData()

notifications = Table(
    "notifications",
    metadata,
    Column("order_id", String(64), primary_key=True),  # one confirmation per order, by key
    Column("customer_id", String(64), nullable=False),
    Column("email", String(200), nullable=False),
    Column("text", Text, nullable=False),
    Column("sent_at", Float, nullable=False),
)


class NotificationService(Service):
    name = "notification"
    metadata = metadata

    def register(self) -> None:
        self.participant.on("notify", self.notify)

    async def notify(self, ctx: StepContext, cmd: NotifyCustomer) -> None:
        if self.rng.random() < self.fail_rate:
            ctx.log.warning(f"Mail server busy; order #{cmd.number} will be notified later")
            raise TransientError("mail server busy")
        text = f"Your order #{cmd.number} ({cmd.quantity} x {cmd.item}) ships as {cmd.tracking}"
        await ctx.connection.execute(
            insert(notifications).values(
                order_id=cmd.order_id,
                customer_id=cmd.customer_id,
                email=cmd.email,
                text=text,
                sent_at=time.time(),
            )
        )
        ctx.log.info(f"Emailed {shown('email', cmd.email)} about order #{cmd.number}")
