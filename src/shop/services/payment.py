"""The payment service: accounts with a balance and a credit limit, charges and refunds.

A payment row is unique per (order, kind): a second charge or refund for an order is
impossible by key, not by luck. A charge is authorized at the outside payment gateway,
through the ``payment-gateway`` circuit breaker, with an idempotency key per order; a
refund voids that authorization.
"""

from __future__ import annotations

import time

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from sagakit import StepContext, StepRejected
from sagakit.engine.breakers import CircuitBreaker
from shop.contracts import ChargePayment, PaymentCharged, ScreenCustomer
from shop.outside import GATEWAY_BREAKER
from shop.services.base import Service
from shop.world import World, dollars

metadata = MetaData()

accounts = Table(
    "accounts",
    metadata,
    Column("customer_id", String(64), primary_key=True),
    Column("balance_cents", Integer, nullable=False),
    Column("initial_cents", Integer, nullable=False),
    Column("credit_limit_cents", Integer, nullable=False),
    Column("card_declined", Boolean, nullable=False),
    Column("flagged", Boolean, nullable=False, default=False),
)

screenings = Table(
    "screenings",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("customer_id", String(64), nullable=False),
    Column("verdict", String(16), nullable=False),
    Column("at", Float, nullable=False),
)

payments = Table(
    "payments",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("order_id", String(64), nullable=False),
    Column("customer_id", String(64), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("amount_cents", Integer, nullable=False),
    Column("at", Float, nullable=False),
    UniqueConstraint("order_id", "kind", name="uq_payments_order_kind"),
)

#: What the gateway holds for each charged order (voided when the charge is refunded).
authorizations = Table(
    "gateway_authorizations",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("authorization_id", String(64), nullable=False, unique=True),
    Column("amount_cents", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("at", Float, nullable=False),
)


class PaymentService(Service):
    name = "payment"
    metadata = metadata

    def register(self) -> None:
        self.participant.on("screen", self.screen)
        self.participant.on("clear", self.clear)
        self.participant.on("charge", self.charge)
        self.participant.on("refund", self.refund)

    def breakers(self) -> list[CircuitBreaker]:
        return [self.outside.breaker(GATEWAY_BREAKER)]

    async def seed(self, conn: AsyncConnection, world: World) -> None:
        await conn.execute(
            insert(accounts),
            [
                {
                    "customer_id": c.id,
                    "balance_cents": c.balance_cents,
                    "initial_cents": c.balance_cents,
                    "credit_limit_cents": c.credit_limit_cents,
                    "card_declined": c.card_declined,
                    "flagged": c.flagged,
                }
                for c in world.customers
            ],
        )

    async def screen(self, ctx: StepContext, cmd: ScreenCustomer) -> None:
        """The fraud check: a customer flagged before is turned away here."""
        account = (
            await ctx.connection.execute(
                select(accounts).where(accounts.c.customer_id == cmd.customer_id)
            )
        ).first()
        if account is not None and account.flagged:
            raise StepRejected(f"fraud screening flagged customer {cmd.customer_id}")
        await ctx.connection.execute(
            insert(screenings).values(
                order_id=cmd.order_id,
                customer_id=cmd.customer_id,
                verdict="clear",
                at=time.time(),
            )
        )
        ctx.log.info(f"Screened order #{cmd.number}: clear")

    async def clear(self, ctx: StepContext, cmd: ScreenCustomer) -> None:
        await ctx.connection.execute(
            delete(screenings).where(screenings.c.order_id == cmd.order_id)
        )

    async def charge(self, ctx: StepContext, cmd: ChargePayment) -> PaymentCharged:
        amount = cmd.amount_cents
        account = (
            await ctx.connection.execute(
                select(accounts).where(accounts.c.customer_id == cmd.customer_id)
            )
        ).first()
        if account is None:
            raise StepRejected(f"no account for customer {cmd.customer_id}")
        if account.card_declined:
            raise StepRejected(f"card declined for {dollars(amount)}")
        charged = await ctx.connection.execute(
            update(accounts)
            .where(
                accounts.c.customer_id == cmd.customer_id,
                accounts.c.balance_cents - amount >= -accounts.c.credit_limit_cents,
            )
            .values(balance_cents=accounts.c.balance_cents - amount)
        )
        if not charged.rowcount:
            raise StepRejected(f"insufficient funds for {dollars(amount)}")
        # Last, so a refusal above never holds money at the gateway. The key is the saga's
        # step: a retry after this transaction rolled back gets the same authorization.
        async with ctx.breakers[GATEWAY_BREAKER]:
            held = await self.outside.payment_gateway.authorize(
                key=f"{ctx.saga_id}/{ctx.step}",
                order_id=cmd.order_id,
                customer_id=cmd.customer_id,
                amount_cents=amount,
            )
        await ctx.connection.execute(
            insert(authorizations).values(
                order_id=cmd.order_id,
                authorization_id=held.id,
                amount_cents=amount,
                status="authorized",
                at=time.time(),
            )
        )
        await ctx.connection.execute(
            insert(payments).values(
                order_id=cmd.order_id,
                customer_id=cmd.customer_id,
                kind="charge",
                amount_cents=amount,
                at=time.time(),
            )
        )
        ctx.log.info(f"Charged {dollars(amount)} for order #{cmd.number} ({held.id})")
        return PaymentCharged(charged_cents=amount)

    async def refund(self, ctx: StepContext, cmd: ChargePayment) -> None:
        amount = cmd.amount_cents
        held = (
            await ctx.connection.execute(
                select(authorizations).where(authorizations.c.order_id == cmd.order_id)
            )
        ).first()
        if held is not None and held.status == "authorized":
            async with ctx.breakers[GATEWAY_BREAKER]:
                await self.outside.payment_gateway.void(held.authorization_id)
            await ctx.connection.execute(
                update(authorizations)
                .where(authorizations.c.order_id == cmd.order_id)
                .values(status="voided", at=time.time())
            )
        await ctx.connection.execute(
            update(accounts)
            .where(accounts.c.customer_id == cmd.customer_id)
            .values(balance_cents=accounts.c.balance_cents + amount)
        )
        await ctx.connection.execute(
            insert(payments).values(
                order_id=cmd.order_id,
                customer_id=cmd.customer_id,
                kind="refund",
                amount_cents=amount,
                at=time.time(),
            )
        )
        ctx.log.info(f"Refunded {dollars(amount)} for order #{cmd.number}")
