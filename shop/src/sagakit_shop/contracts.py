"""The order saga's step contracts: what each step reads from the saga's data, and what
it adds. The saga (``sagakit_shop.saga``) declares them on its steps, the services' handlers
take and return them, and ``sagakit asyncapi`` publishes them for services written in
other languages."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

_FROZEN = ConfigDict(frozen=True)


class OrderRef(BaseModel):
    """Which order a step is about."""

    model_config = _FROZEN

    order_id: str = Field(min_length=1, max_length=64)
    number: int = Field(ge=1)


class OrderLine(OrderRef):
    """An order and what it is for (create an order, reject it)."""

    item: str = Field(min_length=1)
    quantity: int = Field(ge=1)


class ScreenCustomer(OrderRef):
    """The fraud check, and its undoing."""

    customer_id: str = Field(min_length=1, max_length=64)
    customer: str


class ReserveStock(OrderLine):
    """Reserve (and release) an order's items."""

    sku: str = Field(min_length=1, max_length=64)


class StockReserved(BaseModel):
    model_config = _FROZEN

    reserved: int = Field(ge=1)


class ChargePayment(OrderRef):
    """Charge (and refund) an order's total."""

    customer_id: str = Field(min_length=1, max_length=64)
    amount_cents: int = Field(ge=0)


class PaymentCharged(BaseModel):
    model_config = _FROZEN

    charged_cents: int = Field(ge=0)


class ScheduleShipment(ReserveStock):
    """Book the parcel with the carrier: the saga's pivot."""

    region: str = Field(min_length=1, max_length=64)


class ShipmentScheduled(BaseModel):
    model_config = _FROZEN

    tracking: str = Field(min_length=1)


class NotifyCustomer(OrderLine):
    """Tell the customer their order ships."""

    customer_id: str = Field(min_length=1, max_length=64)
    email: str = Field(min_length=3, max_length=200)
    tracking: str = "-"
