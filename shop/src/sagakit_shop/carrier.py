"""The shipping carrier: an outside system that prices and times a parcel's trip.

It quotes only for the regions it serves; a quote for any other is a business answer
(a 422), not the carrier failing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from sagakit_shop.trouble import Knobs, trouble_routes
from sagakit_shop.world import SUPPORTED_REGIONS

if TYPE_CHECKING:
    from fastapi import FastAPI


class QuoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    order_id: str = Field(min_length=1, max_length=64)
    region: str = Field(min_length=1, max_length=64)
    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(gt=0)


class Quote(BaseModel):
    id: str
    order_id: str
    region: str
    price_cents: int
    eta_days: int


#: What a parcel costs to each region the carrier serves, and how long it takes.
RATES: dict[str, tuple[int, int, int]] = {  # region: (base cents, cents per item, days)
    "eu": (4_90, 1_00, 2),
    "us": (7_90, 1_50, 4),
    "apac": (12_90, 2_00, 6),
}


@dataclass
class Carrier:
    """The shipping carrier's quote desk, for the regions it serves."""

    knobs: Knobs = field(default_factory=Knobs)
    regions: frozenset[str] = SUPPORTED_REGIONS
    quotes: list[Quote] = field(default_factory=list)

    def quote(self, request: QuoteRequest) -> Quote:
        if request.region not in self.regions:
            raise ValueError(f"the carrier does not serve {request.region}")
        base, per_item, days = RATES.get(request.region, (9_90, 1_50, 5))
        made = Quote(
            id=f"q_{uuid.uuid4().hex[:16]}",
            order_id=request.order_id,
            region=request.region,
            price_cents=base + per_item * request.quantity,
            eta_days=days,
        )
        self.quotes.append(made)
        return made


def carrier_app(carrier: Carrier) -> FastAPI:
    """The carrier's quote API."""
    from fastapi import FastAPI, HTTPException

    from sagakit.api.guard import harden

    app = FastAPI(title="shipping carrier", description="Prices and times a parcel's trip.")
    trouble_routes(app, carrier.knobs, "carrier")

    @app.post("/quotes", status_code=201)
    async def quote(request: QuoteRequest) -> Quote:
        try:
            made = carrier.quote(request)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        await carrier.knobs.answer_late()
        return made

    return harden(app)  # bodies bounded before they are read, as on every server
