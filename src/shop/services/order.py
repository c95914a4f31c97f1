"""The order service: customers, the catalog with prices, and orders.

Placing an order writes the order row and the message that starts its saga in one
local transaction, so there is never an order without a saga nor a saga without an
order. The saga then moves the order from pending to approved, or to rejected.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from sagakit import StepContext
from sagakit.ports import UnitOfWork
from shop.contracts import OrderLine, OrderRef
from shop.services.base import Service
from shop.world import World, dollars

metadata = MetaData()

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

#: One row handing out order numbers; an UPDATE ... RETURNING takes the next one safely
#: however many placements run at once.
counters = Table(
    "counters",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("value", Integer, nullable=False),
)

MAX_QUANTITY = 10_000


class OrderRejected(ValueError):
    """The request cannot become an order (unknown customer or item, bad quantity)."""


@dataclass(frozen=True, slots=True)
class PlacedOrder:
    order_id: str
    number: int
    amount_cents: int
    status: str


#: How a placed order's saga gets started inside the order's own transaction.
SagaStarter = Callable[[UnitOfWork, str, dict[str, Any]], Awaitable[None]]


class OrderService(Service):
    name = "order"
    metadata = metadata

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
        await conn.execute(insert(counters).values(name="order", value=100))

    async def place(
        self, customer_id: str, sku: str, quantity: int, *, start: SagaStarter
    ) -> PlacedOrder:
        """Validate and record an order, and start its saga in the same transaction."""
        if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity <= 0:
            raise OrderRejected(f"quantity must be a positive whole number, got {quantity!r}")
        if quantity > MAX_QUANTITY:
            raise OrderRejected(
                f"quantity {quantity} is more than one order may hold ({MAX_QUANTITY})"
            )
        async with self.store.unit() as unit:
            conn = unit.connection
            customer = (
                await conn.execute(select(customers).where(customers.c.id == customer_id))
            ).first()
            if customer is None:
                raise OrderRejected(f"unknown customer {customer_id!r}")
            item = (await conn.execute(select(catalog).where(catalog.c.sku == sku))).first()
            if item is None:
                raise OrderRejected(f"unknown item {sku!r}")
            number = int(
                await conn.scalar(
                    update(counters)
                    .where(counters.c.name == "order")
                    .values(value=counters.c.value + 1)
                    .returning(counters.c.value)
                )
            )
            order_id = f"order-{number}"
            amount = item.price_cents * quantity
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
                "customer": customer.name,
                "email": customer.email,
                "region": customer.region,
                "vip": bool(customer.vip),
                "sku": sku,
                "item": item.name,
                "quantity": quantity,
                "amount_cents": amount,
            }
            await start(unit, order_id, data)
        what = f"{quantity} x {item.name} for {dollars(amount)}"
        self.participant.log.info(
            f"Order #{number} placed: {what} by {customer.name}", saga_id=order_id
        )
        return PlacedOrder(order_id, number, amount, "new")

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
