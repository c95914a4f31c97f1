"""The shipping service: shipments. Scheduling one is the saga's pivot: once a parcel is
booked with the carrier, the order goes through.

The carrier is an outside system: its quote (price and time, or a refusal for a region
it does not serve) is asked over HTTP through the ``carrier-quote`` circuit breaker, and
kept with the shipment."""

from __future__ import annotations

import time

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, insert

from sagakit import StepContext
from sagakit.engine.breakers import CircuitBreaker
from shop.contracts import ScheduleShipment, ShipmentScheduled
from shop.outside import CARRIER_BREAKER
from shop.services.base import Service

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

#: The carrier's quote each shipment was booked on.
quotes = Table(
    "carrier_quotes",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("quote_id", String(64), nullable=False),
    Column("price_cents", Integer, nullable=False),
    Column("eta_days", Integer, nullable=False),
    Column("at", Float, nullable=False),
)


class ShippingService(Service):
    name = "shipping"
    metadata = metadata

    def register(self) -> None:
        self.participant.on("schedule", self.schedule)

    def breakers(self) -> list[CircuitBreaker]:
        return [self.outside.breaker(CARRIER_BREAKER)]

    async def schedule(self, ctx: StepContext, cmd: ScheduleShipment) -> ShipmentScheduled:
        # A region the carrier does not serve is its refusal (StepRejected), not a failure.
        async with ctx.breakers[CARRIER_BREAKER]:
            quote = await self.outside.carrier_quotes.quote(
                order_id=cmd.order_id, region=cmd.region, sku=cmd.sku, quantity=cmd.quantity
            )
        await ctx.connection.execute(
            insert(shipments).values(
                order_id=cmd.order_id,
                sku=cmd.sku,
                quantity=cmd.quantity,
                region=cmd.region,
                scheduled_at=time.time(),
            )
        )
        await ctx.connection.execute(
            insert(quotes).values(
                order_id=cmd.order_id,
                quote_id=quote.id,
                price_cents=quote.price_cents,
                eta_days=quote.eta_days,
                at=time.time(),
            )
        )
        eta = f"{quote.eta_days} days"
        ctx.log.info(f"Shipment scheduled for order #{cmd.number} to {cmd.region} ({eta})")
        return ShipmentScheduled(tracking=f"TRK-{cmd.number}")
