"""The order service: customers, the catalog with prices, and orders.

Placing an order writes the order row and the message that starts its saga in one
local transaction, so there is never an order without a saga nor a saga without an
order. The saga then moves the order from pending to approved, or to rejected.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    Sequence,
    String,
    Table,
    Text,
    delete,
    func,
    insert,
    select,
    true,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ColumnElement

from sagakit import StepContext
from sagakit.observe.redaction import shown
from sagakit.ports import UnitOfWork
from sagakit_shop.contracts import OrderLine, OrderRef
from sagakit_shop.services.base import Service
from sagakit_shop.world import World, dollars

metadata = MetaData()

#: The first order's number.
FIRST_NUMBER = 101
#: How long an idempotency key is remembered, in seconds.
KEY_TTL = 24 * 3600

customers = Table(
    "customers",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("email", String(200), nullable=False),
    Column("region", String(64), nullable=False),
    Column("vip", Boolean, nullable=False, default=False),
)

catalog = Table(
    "catalog",
    metadata,
    Column("sku", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("price_cents", Integer, nullable=False),
)

orders = Table(
    "orders",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("number", Integer, nullable=False, unique=True),
    Column("customer_id", String(64), nullable=False),
    Column("sku", String(64), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("amount_cents", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("reason", Text),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    CheckConstraint("quantity > 0", name="ck_orders_quantity"),
)

#: Order numbers on PostgreSQL: a sequence hands out the next one without a row that
#: every placement must lock (SQLite has one writer at a time: there the next number is
#: the highest so far plus one, read inside the write).
order_numbers = Sequence("order_numbers", start=FIRST_NUMBER, metadata=metadata)

#: Idempotency keys of placed orders: the same key with the same request gives back the
#: first order; kept for KEY_TTL seconds.
order_requests = Table(
    "order_requests",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("order_id", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_order_requests_created_at", "created_at"),
)

MAX_QUANTITY = 10_000


class OrderRejected(ValueError):
    """The request cannot become an order (unknown customer or item, bad quantity)."""


class KeyReused(ValueError):
    """An idempotency key already placed an order for a different request."""


@dataclass(frozen=True, slots=True)
class PlacedOrder:
    order_id: str
    number: int
    amount_cents: int
    status: str
    #: The order was placed before under the same idempotency key and request.
    replayed: bool = False


#: How a placed order's saga gets started inside the order's own transaction.
SagaStarter = Callable[[UnitOfWork, str, dict[str, Any]], Awaitable[None]]


class OrderService(Service):
    name = "order"
    metadata = metadata
    _pruned = 0.0

    def register(self) -> None:
        self.participant.on("create", self.create)
        self.participant.on("reject", self.reject)
        self.participant.on("approve", self.approve)

    async def seed(self, conn: AsyncConnection, world: World) -> None:
        await conn.execute(
            insert(customers),
            [
                {"id": c.id, "name": c.name, "email": c.email, "region": c.region, "vip": c.vip}
                for c in world.customers
            ],
        )
        await conn.execute(
            insert(catalog),
            [{"sku": i.sku, "name": i.name, "price_cents": i.price_cents} for i in world.items],
        )

    async def place(
        self,
        customer_id: str,
        sku: str,
        quantity: int,
        *,
        start: SagaStarter,
        idempotency_key: str | None = None,
    ) -> PlacedOrder:
        """Validate and record an order, and start its saga in the same transaction.

        With ``idempotency_key``, a request placed before under that key gives back its
        order (``replayed``), and a different request under it raises KeyReused."""
        if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity <= 0:
            raise OrderRejected(f"quantity must be a positive whole number, got {quantity!r}")
        if quantity > MAX_QUANTITY:
            raise OrderRejected(
                f"quantity {quantity} is more than one order may hold ({MAX_QUANTITY})"
            )
        fingerprint = hashlib.sha256(f"{customer_id}\0{sku}\0{quantity}".encode()).hexdigest()
        try:
            async with self.store.unit() as unit:
                if idempotency_key is not None:
                    earlier = await self._earlier(unit.connection, idempotency_key, fingerprint)
                    if earlier is not None:
                        return earlier
                placed, found = await self._record(unit, customer_id, sku, quantity, start=start)
                if idempotency_key is not None:
                    await self._remember(unit, idempotency_key, fingerprint, placed.order_id)
        except IntegrityError:
            if idempotency_key is None:
                raise
            # The same key, placed at the same moment by another request: that one won.
            async with self.store.unit() as unit:
                earlier = await self._earlier(unit.connection, idempotency_key, fingerprint)
            if earlier is None:
                raise
            return earlier
        what = f"{quantity} x {found.item} for {dollars(placed.amount_cents)}"
        self.participant.log.info(
            f"Order #{placed.number} placed: {what} by {shown('customer', found.name)}",
            saga_id=placed.order_id,
        )
        return placed

    async def _record(
        self, unit: UnitOfWork, customer_id: str, sku: str, quantity: int, *, start: SagaStarter
    ) -> tuple[PlacedOrder, Any]:
        """The order and its saga's start; with the row of its customer and item."""
        conn = unit.connection
        # The customer, the item and the order's number in one round trip: the order
        # API's transaction is the one a waiting client pays for.
        found = (
            await conn.execute(
                select(
                    customers,
                    catalog.c.name.label("item"),
                    catalog.c.price_cents,
                    _next_number(conn).label("number"),
                )
                .select_from(customers.join(catalog, true()))  # one row of each, by key
                .where(customers.c.id == customer_id, catalog.c.sku == sku)
            )
        ).first()
        if found is None:
            known = await conn.scalar(select(customers.c.id).where(customers.c.id == customer_id))
            what = f"item {sku!r}" if known else f"customer {customer_id!r}"
            raise OrderRejected(f"unknown {what}")
        number = int(found.number)
        order_id = f"order-{number}"
        amount = found.price_cents * quantity
        now = time.time()
        await conn.execute(
            insert(orders).values(
                id=order_id,
                number=number,
                customer_id=customer_id,
                sku=sku,
                quantity=quantity,
                amount_cents=amount,
                status="new",
                created_at=now,
                updated_at=now,
            )
        )
        data = {
            "order_id": order_id,
            "number": number,
            "customer_id": customer_id,
            "customer": found.name,
            "email": found.email,
            "region": found.region,
            "vip": bool(found.vip),
            "sku": sku,
            "item": found.item,
            "quantity": quantity,
            "amount_cents": amount,
        }
        await start(unit, order_id, data)
        return PlacedOrder(order_id, number, amount, "new"), found

    async def _earlier(
        self, conn: AsyncConnection, key: str, fingerprint: str
    ) -> PlacedOrder | None:
        """The order placed before under ``key``, if it is still remembered."""
        found = (
            await conn.execute(
                select(order_requests, orders)
                .join(orders, orders.c.id == order_requests.c.order_id)
                .where(
                    order_requests.c.key == key,
                    order_requests.c.created_at >= time.time() - KEY_TTL,
                )
            )
        ).first()
        if found is None:
            return None
        if found.fingerprint != fingerprint:
            raise KeyReused(f"the idempotency key {key!r} was used for a different order")
        return PlacedOrder(found.id, found.number, found.amount_cents, found.status, replayed=True)

    async def _remember(self, unit: UnitOfWork, key: str, fingerprint: str, order_id: str) -> None:
        now = time.time()
        conn = unit.connection
        # A key past its time may be taken again: its old row goes first.
        await conn.execute(
            delete(order_requests).where(
                order_requests.c.key == key, order_requests.c.created_at < now - KEY_TTL
            )
        )
        await conn.execute(
            insert(order_requests).values(
                key=key, fingerprint=fingerprint, order_id=order_id, created_at=now
            )
        )
        if now - self._pruned > 60:  # keys past their time, at most once a minute
            self._pruned = now
            await conn.execute(
                delete(order_requests).where(order_requests.c.created_at < now - KEY_TTL)
            )

    async def get(self, order_id: str) -> dict[str, Any] | None:
        async with self.store.unit() as unit:
            query = select(orders).where(orders.c.id == order_id)
            row = (await unit.connection.execute(query)).first()
        return dict(row._mapping) if row is not None else None

    async def _set(
        self, ctx: StepContext, status: str, *, only_from: set[str], reason: str | None = None
    ) -> int:
        result = await ctx.connection.execute(
            update(orders)
            .where(orders.c.id == ctx.payload["order_id"], orders.c.status.in_(sorted(only_from)))
            .values(status=status, reason=reason, updated_at=time.time())
        )
        return int(result.rowcount or 0)

    async def create(self, ctx: StepContext, cmd: OrderLine) -> None:
        await self._set(ctx, "pending", only_from={"new"})
        ctx.log.info(f"Order #{cmd.number} is pending: {cmd.quantity} x {cmd.item}")

    async def reject(self, ctx: StepContext, cmd: OrderLine) -> None:
        await self._set(ctx, "rejected", only_from={"new", "pending"}, reason=ctx.reason)
        ctx.log.info(f"Order #{cmd.number} rejected ({ctx.reason})")

    async def approve(self, ctx: StepContext, cmd: OrderRef) -> None:
        await self._set(ctx, "approved", only_from={"pending"})
        ctx.log.info(f"Order #{cmd.number} approved")


def _next_number(conn: AsyncConnection) -> ColumnElement[int]:
    """The next order number: the sequence's on PostgreSQL; on SQLite, whose writers
    take turns, the highest so far plus one."""
    if conn.dialect.name == "postgresql":
        return order_numbers.next_value()
    highest = select(func.max(orders.c.number)).scalar_subquery()
    return func.coalesce(highest, FIRST_NUMBER - 1) + 1
