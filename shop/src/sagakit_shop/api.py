"""The order service's HTTP API: place an order, read its status.

A bad request (zero or negative quantity, unknown customer or item, malformed JSON,
NaN, a body over the limit) gets a 4xx with a clear message and writes nothing. A
client that retries sends the same ``Idempotency-Key``: it gets the first order back.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI, Header, HTTPException, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from sagakit.api.docs import serve_docs
from sagakit.api.guard import harden
from sagakit_shop.app import Shop
from sagakit_shop.services.order import KEY_TTL, MAX_QUANTITY, KeyReused, OrderRejected, orders
from sagakit_shop.world import dollars

#: Order requests are small: anything bigger is refused before it is read.
MAX_BODY = 16 * 1024


def _problem(what: str) -> dict[str, Any]:
    detail = {"type": "object", "properties": {"detail": {}}, "required": ["detail"]}
    return {"description": what, "content": {"application/json": {"schema": detail}}}


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


def create_app(shop: Shop, *, max_body: int = MAX_BODY) -> FastAPI:
    app = FastAPI(
        title="sagakit shop: orders",
        description="Place orders; each one runs the order saga across five services.",
        version="1",
        docs_url=None,
        responses={413: _problem("the body is over the limit"), 422: _problem("malformed")},
    )
    serve_docs(app, docs_url="/docs", openapi_url="/openapi.json", title="sagakit shop")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "mode": shop.mode}

    @app.post(
        "/orders",
        status_code=201,
        response_model=OrderOut,
        responses={
            200: {"model": OrderOut, "description": "placed before under this key"},
            409: _problem("the idempotency key was used for a different order"),
        },
    )
    async def place(
        order: OrderIn,
        response: Response,
        idempotency_key: Annotated[
            str | None,
            Header(
                min_length=1,
                max_length=200,
                pattern=r"^[\x21-\x7e]+$",
                description="Retry safely: the same key and request give back the first "
                f"order (200) for {KEY_TTL // 3600} hours; another request under it, 409.",
            ),
        ] = None,
    ) -> OrderOut:
        try:
            placed = await shop.place(
                order.customer_id, order.sku, order.quantity, idempotency_key=idempotency_key
            )
        except OrderRejected as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc
        except KeyReused as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from exc
        if placed.replayed:  # as it stands now: its saga may have moved it on
            response.status_code = 200
            row = await _get(shop, placed.order_id)
            assert row is not None
            return _out(row)
        # A new order is what was just written: no second transaction to read it back.
        cents = placed.amount_cents
        written = {"order_id": placed.order_id, "number": placed.number, "status": placed.status}
        return OrderOut(**written, **order.model_dump(), amount_cents=cents, amount=dollars(cents))

    @app.get(
        "/orders/{order_id}",
        response_model=OrderOut,
        responses={404: _problem("no such order")},
    )
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

    return harden(app, max_body=max_body)


async def _get(shop: Shop, order_id: str) -> Any:
    async with shop.orders.store.unit() as unit:
        return (
            await unit.connection.execute(select(orders).where(orders.c.id == order_id))
        ).first()
