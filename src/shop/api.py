"""The order service's HTTP API: place an order, read its status.

A bad request (zero or negative quantity, unknown customer or item, malformed JSON)
gets a 4xx with a clear message and writes nothing.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from shop.app import Shop
from shop.services.order import MAX_QUANTITY, OrderRejected, orders
from shop.world import dollars


class OrderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_id: str = Field(min_length=1, max_length=64, examples=["c-ada"])
    sku: str = Field(min_length=1, max_length=64, examples=["lamp"])
    quantity: int = Field(gt=0, le=MAX_QUANTITY, strict=True, examples=[2])


class OrderOut(BaseModel):
    order_id: str
    number: int
    customer_id: str
    sku: str
    quantity: int
    amount_cents: int
    amount: str
    status: str
    reason: str | None = None


def _out(row: Any) -> OrderOut:
    return OrderOut(
        order_id=row.id,
        number=row.number,
        customer_id=row.customer_id,
        sku=row.sku,
        quantity=row.quantity,
        amount_cents=row.amount_cents,
        amount=dollars(row.amount_cents),
        status=row.status,
        reason=row.reason,
    )


def create_app(shop: Shop) -> FastAPI:
    app = FastAPI(
        title="sagakit shop: orders",
        description="Place orders; each one runs the order saga across five services.",
        version="1",
    )

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "mode": shop.mode}

    @app.post("/orders", status_code=201, response_model=OrderOut)
    async def place(order: OrderIn) -> OrderOut:
        try:
            placed = await shop.place(order.customer_id, order.sku, order.quantity)
        except OrderRejected as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc
        row = await _get(shop, placed.order_id)
        assert row is not None
        return _out(row)

    @app.get("/orders/{order_id}", response_model=OrderOut)
    async def get(order_id: str) -> OrderOut:
        row = await _get(shop, order_id)
        if row is None:
            raise HTTPException(status_code=404, detail=f"no order {order_id!r}")
        return _out(row)

    @app.get("/orders", response_model=list[OrderOut])
    async def list_orders(
        status: Annotated[str | None, Query(pattern="^(new|pending|approved|rejected)$")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    ) -> list[OrderOut]:
        query = select(orders).order_by(orders.c.number.desc()).limit(limit)
        if status:
            query = query.where(orders.c.status == status)
        async with shop.orders.store.unit() as unit:
            return [_out(row) for row in await unit.connection.execute(query)]

    return app


async def _get(shop: Shop, order_id: str) -> Any:
    async with shop.orders.store.unit() as unit:
        return (
            await unit.connection.execute(select(orders).where(orders.c.id == order_id))
        ).first()
