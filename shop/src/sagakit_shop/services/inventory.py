"""The inventory service: items with stock on hand and reserved, and reservations.

Reserving is a commutative update guarded in SQL (``on_hand >= quantity``), never a
read-modify-write, so concurrent sagas cannot oversell.
"""

from __future__ import annotations

from sqlalchemy import CheckConstraint, Column, Integer, MetaData, String, Table, insert, update
from sqlalchemy.ext.asyncio import AsyncConnection

from sagakit import StepContext, StepRejected
from sagakit_shop.contracts import ReserveStock, StockReserved
from sagakit_shop.services.base import Service
from sagakit_shop.world import World

metadata = MetaData()

items = Table(
    "items",
    metadata,
    Column("sku", String(64), primary_key=True),
    Column("on_hand", Integer, nullable=False),
    Column("reserved", Integer, nullable=False),
    Column("initial", Integer, nullable=False),
    CheckConstraint("on_hand >= 0", name="ck_items_on_hand"),
    CheckConstraint("reserved >= 0", name="ck_items_reserved"),
)

reservations = Table(
    "reservations",
    metadata,
    Column("order_id", String(64), primary_key=True),  # one reservation per order, by key
    Column("sku", String(64), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("status", String(16), nullable=False),
)


class InventoryService(Service):
    name = "inventory"
    metadata = metadata

    def register(self) -> None:
        self.participant.on("reserve", self.reserve)
        self.participant.on("release", self.release)

    async def seed(self, conn: AsyncConnection, world: World) -> None:
        await conn.execute(
            insert(items),
            [
                {"sku": i.sku, "on_hand": i.stock, "reserved": 0, "initial": i.stock}
                for i in world.items
            ],
        )

    async def reserve(self, ctx: StepContext, cmd: ReserveStock) -> StockReserved:
        taken = await ctx.connection.execute(
            update(items)
            .where(items.c.sku == cmd.sku, items.c.on_hand >= cmd.quantity)
            .values(
                on_hand=items.c.on_hand - cmd.quantity, reserved=items.c.reserved + cmd.quantity
            )
        )
        if not taken.rowcount:
            raise StepRejected(f"not enough {cmd.item} in stock for {cmd.quantity}")
        await ctx.connection.execute(
            insert(reservations).values(
                order_id=cmd.order_id, sku=cmd.sku, quantity=cmd.quantity, status="reserved"
            )
        )
        ctx.log.info(f"Reserved {cmd.quantity} x {cmd.item} for order #{cmd.number}")
        return StockReserved(reserved=cmd.quantity)

    async def release(self, ctx: StepContext, cmd: ReserveStock) -> None:
        await ctx.connection.execute(
            update(items)
            .where(items.c.sku == cmd.sku)
            .values(
                on_hand=items.c.on_hand + cmd.quantity, reserved=items.c.reserved - cmd.quantity
            )
        )
        await ctx.connection.execute(
            update(reservations)
            .where(reservations.c.order_id == cmd.order_id)
            .values(status="released")
        )
        ctx.log.info(f"Released {cmd.quantity} x {cmd.item} from order #{cmd.number}")
