"""The shipping service: shipments. Scheduling one is the saga's pivot: once a parcel is
booked with the carrier, the order goes through."""

from __future__ import annotations

import time

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, insert

from sagakit import StepContext, StepRejected
from shop.services.base import Service
from shop.world import SUPPORTED_REGIONS

metadata = MetaData()

shipments = Table(
    "shipments",
    metadata,
    Column("order_id", String(64), primary_key=True),  # one shipment per order, by key
    Column("sku", String(64), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("region", String(64), nullable=False),
    Column("scheduled_at", Float, nullable=False),
)


class ShippingService(Service):
    name = "shipping"
    metadata = metadata

    def register(self) -> None:
        self.participant.on("schedule", self.schedule)

    async def schedule(self, ctx: StepContext) -> dict[str, str]:
        p = ctx.payload
        if p["region"] not in SUPPORTED_REGIONS:
            raise StepRejected(f"we do not ship to {p['region']}")
        await ctx.connection.execute(
            insert(shipments).values(
                order_id=p["order_id"],
                sku=p["sku"],
                quantity=p["quantity"],
                region=p["region"],
                scheduled_at=time.time(),
            )
        )
        ctx.log.info(f"Shipment scheduled for order #{p['number']} to {p['region']}")
        return {"tracking": f"TRK-{p['number']}"}
