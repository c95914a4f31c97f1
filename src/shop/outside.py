"""The outside systems the shop calls over HTTP: a payment gateway and a carrier's quotes.

They are not the shop's services: nothing of theirs is in a saga's local transaction,
and they can be slow or down. Each is a small FastAPI app with trouble knobs (start-up
options, and ``PUT /trouble`` at run time): a 5xx or a timeout is the dependency
failing; a 4xx is a business answer (a region the carrier does not serve).

The gateway honours an ``Idempotency-Key`` header, as real gateways do: the payment
service authorizes with a key per order, so a call repeated after its local transaction
rolled back (a timeout that hid a success, a crash before the commit) gets the first
authorization back instead of a second one.

Embedded, the apps run in-process behind httpx's ASGI transport (no sockets);
distributed, ``sagakit up`` runs each as its own process and the services call their URLs.
The clients translate failures at the boundary: :class:`DependencyFailed` (transient, a
circuit breaker counts it) or :class:`StepRejected` (a refusal, never counted).
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sagakit import StepRejected, TransientError
from sagakit.engine.breakers import CircuitBreaker
from shop.world import SUPPORTED_REGIONS

if TYPE_CHECKING:
    import httpx
    from fastapi import FastAPI

#: The breakers the shop's services keep, one per outside system.
GATEWAY_BREAKER = "payment-gateway"
CARRIER_BREAKER = "carrier-quote"

#: The outside systems' processes under ``sagakit up`` (next to the shop's own).
OUTSIDE: tuple[str, ...] = ("gateway", "carrier")


class DependencyFailed(TransientError):
    """An outside system failed (5xx, timeout, unreachable): the step is retried, and the
    breaker in front of the system counts it."""


# ---------------------------------------------------------------------------- trouble


class Trouble(BaseModel):
    """How badly an outside system behaves: a share of calls answered 503, a delay before
    every answer (after the work is done, so a caller's timeout can hide a success), or
    down altogether (for ``down_for_s`` seconds from now, when given)."""

    model_config = ConfigDict(extra="forbid")

    fail_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    delay_s: float = Field(default=0.0, ge=0.0, le=60.0)
    down: bool = False
    down_for_s: float | None = Field(default=None, ge=0.0, le=3600.0)


@dataclass
class Knobs:
    """The trouble an outside system is in right now."""

    trouble: Trouble = field(default_factory=Trouble)
    seed: int = 0
    down_until: float | None = None
    rng: random.Random = field(init=False)
    served: int = 0
    failed: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)  # noqa: S311 - seeded trouble, not security
        self.set(self.trouble)

    def set(self, trouble: Trouble) -> None:
        self.trouble = trouble
        self.down_until = None if trouble.down_for_s is None else time.time() + trouble.down_for_s

    def now(self) -> Trouble:
        """The trouble as it stands (a timed outage that has passed is over)."""
        if self.down_until is not None and time.time() >= self.down_until:
            self.set(self.trouble.model_copy(update={"down_for_s": None}))
        if self.down_until is None:
            return self.trouble
        left = round(self.down_until - time.time(), 3)
        return self.trouble.model_copy(update={"down_for_s": left})

    def failing(self) -> bool:
        """Whether this call fails (down, or unlucky under ``fail_rate``)."""
        trouble = self.now()
        if trouble.down or trouble.down_for_s is not None:
            return True
        return trouble.fail_rate > 0 and self.rng.random() < trouble.fail_rate

    async def answer_late(self) -> None:
        if self.trouble.delay_s:
            await asyncio.sleep(self.trouble.delay_s)


def _trouble_routes(app: FastAPI, knobs: Knobs, what: str) -> None:
    from fastapi.responses import JSONResponse

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "service": what}

    @app.get("/trouble")
    async def get_trouble() -> Trouble:
        return knobs.now()

    @app.put("/trouble")
    async def put_trouble(trouble: Trouble) -> Trouble:
        knobs.set(trouble)
        return knobs.now()

    @app.middleware("http")
    async def trouble(request: Any, call_next: Any) -> Any:
        if request.url.path in ("/health", "/trouble", "/docs", "/openapi.json"):
            return await call_next(request)
        if knobs.failing():
            knobs.failed += 1
            return JSONResponse({"detail": f"{what} unavailable"}, status_code=503)
        knobs.served += 1
        return await call_next(request)


# ---------------------------------------------------------------------------- the gateway


class AuthorizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    order_id: str = Field(min_length=1, max_length=64)
    customer_id: str = Field(min_length=1, max_length=64)
    amount_cents: int = Field(gt=0)


class Authorization(BaseModel):
    id: str
    order_id: str
    customer_id: str
    amount_cents: int
    status: Literal["authorized", "voided"]
    idempotency_key: str


@dataclass
class Gateway:
    """The payment gateway's own books: authorizations by id and by idempotency key.

    With ``books`` (a SQLite file) they outlive the process, as a real gateway's do: a
    gateway restarted between a charge and its retry still answers the retry with the
    first authorization instead of making a second. Without, they live in memory (the
    embedded demo, where the gateway lives and dies with the shop).
    """

    knobs: Knobs = field(default_factory=Knobs)
    by_id: dict[str, Authorization] = field(default_factory=dict)
    by_key: dict[str, str] = field(default_factory=dict)
    replays: int = 0
    books: Path | None = None
    _db: sqlite3.Connection | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.books is None:
            return
        self.books.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.books, isolation_level=None)  # each write commits
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS authorizations (id TEXT PRIMARY KEY, body TEXT NOT NULL)"
        )
        for (body,) in self._db.execute("SELECT body FROM authorizations"):
            found = Authorization.model_validate_json(body)
            self.by_id[found.id] = found
            self.by_key[found.idempotency_key] = found.id

    def _keep(self, authorization: Authorization) -> None:
        """Write ``authorization`` to the books (before it is answered), then remember it."""
        if self._db is not None:
            self._db.execute(
                "INSERT INTO authorizations (id, body) VALUES (?, ?) "
                "ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                (authorization.id, authorization.model_dump_json()),
            )
        self.by_id[authorization.id] = authorization
        self.by_key[authorization.idempotency_key] = authorization.id

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def void(self, authorization_id: str) -> Authorization | None:
        """Void an authorization (voiding twice is voiding); None if there is none."""
        found = self.by_id.get(authorization_id)
        if found is None:
            return None
        if found.status != "voided":
            found = found.model_copy(update={"status": "voided"})
            self._keep(found)
        return found

    def authorize(self, key: str, request: AuthorizeRequest) -> tuple[Authorization, bool]:
        """The authorization for ``key``: the one made before (True), or a new one."""
        known = self.by_key.get(key)
        if known is not None:
            found = self.by_id[known]
            if (found.order_id, found.customer_id, found.amount_cents) != (
                request.order_id,
                request.customer_id,
                request.amount_cents,
            ):
                raise ValueError(f"idempotency key {key!r} was used for another request")
            self.replays += 1
            return found, True
        made = Authorization(
            id=f"auth_{uuid.uuid4().hex[:16]}",
            status="authorized",
            idempotency_key=key,
            **request.model_dump(),
        )
        self._keep(made)
        return made, False


def gateway_app(gateway: Gateway) -> FastAPI:
    """The payment gateway's HTTP API."""
    from fastapi import FastAPI, Header, HTTPException
    from fastapi.responses import JSONResponse

    from sagakit.api.guard import harden

    app = FastAPI(title="payment gateway", description="Authorizes and voids card charges.")
    _trouble_routes(app, gateway.knobs, "payment gateway")

    @app.post("/authorizations", status_code=201, response_model=Authorization)
    async def authorize(
        request: AuthorizeRequest,
        idempotency_key: str = Header(min_length=1, max_length=200),
    ) -> Any:
        try:
            made, replayed = gateway.authorize(idempotency_key, request)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        await gateway.knobs.answer_late()
        if replayed:  # the first answer again, marked the way real gateways mark it
            headers = {"Idempotent-Replayed": "true"}
            return JSONResponse(made.model_dump(), status_code=200, headers=headers)
        return made

    @app.post("/authorizations/{authorization_id}/void")
    async def void(authorization_id: str) -> Authorization:
        voided = gateway.void(authorization_id)
        if voided is None:
            raise HTTPException(404, f"no authorization {authorization_id}")
        await gateway.knobs.answer_late()
        return voided

    @app.get("/authorizations")
    async def authorizations() -> list[Authorization]:
        return list(gateway.by_id.values())

    return harden(app)  # bodies bounded before they are read, as on every server


# ---------------------------------------------------------------------------- the carrier


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
    _trouble_routes(app, carrier.knobs, "carrier")

    @app.post("/quotes", status_code=201)
    async def quote(request: QuoteRequest) -> Quote:
        try:
            made = carrier.quote(request)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        await carrier.knobs.answer_late()
        return made

    return harden(app)  # bodies bounded before they are read, as on every server


# ---------------------------------------------------------------------------- clients


async def _call(
    http: httpx.AsyncClient, what: str, timeout: float, method: str, path: str, **kwargs: Any
) -> httpx.Response:
    """One request; a failure of the system is DependencyFailed, a 4xx is returned."""
    import httpx

    try:
        async with asyncio.timeout(timeout):  # the ASGI transport has no timeouts of its own
            response = await http.request(method, path, **kwargs)
    except TimeoutError as exc:
        raise DependencyFailed(f"{what}: no answer within {timeout:g}s") from exc
    except httpx.HTTPError as exc:
        raise DependencyFailed(f"{what}: {type(exc).__name__}: {exc}") from exc
    if response.status_code >= 500:
        raise DependencyFailed(f"{what}: {response.status_code} {_detail(response)}")
    return response


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text


@dataclass
class PaymentGateway:
    """The payment service's client of the gateway."""

    http: httpx.AsyncClient
    timeout: float = 1.0

    async def authorize(
        self, *, key: str, order_id: str, customer_id: str, amount_cents: int
    ) -> Authorization:
        response = await _call(
            self.http,
            "payment gateway",
            self.timeout,
            "POST",
            "/authorizations",
            headers={"Idempotency-Key": key},
            json={"order_id": order_id, "customer_id": customer_id, "amount_cents": amount_cents},
        )
        if response.status_code >= 400:
            raise StepRejected(f"the payment gateway refused: {_detail(response)}")
        return Authorization.model_validate(response.json())

    async def void(self, authorization_id: str) -> bool:
        """Void an authorization; False when the gateway does not know it (nothing held)."""
        response = await _call(
            self.http,
            "payment gateway",
            self.timeout,
            "POST",
            f"/authorizations/{authorization_id}/void",
        )
        if response.status_code == 404:
            return False
        if response.status_code >= 400:
            raise DependencyFailed(f"payment gateway: void refused: {_detail(response)}")
        return True

    async def authorizations(self) -> list[Authorization]:
        response = await _call(self.http, "payment gateway", self.timeout, "GET", "/authorizations")
        return [Authorization.model_validate(a) for a in response.json()]

    async def set_trouble(self, trouble: Trouble) -> None:
        await _call(
            self.http, "payment gateway", self.timeout, "PUT", "/trouble", json=trouble.model_dump()
        )


@dataclass
class CarrierQuotes:
    """The shipping service's client of the carrier."""

    http: httpx.AsyncClient
    timeout: float = 1.0

    async def quote(self, *, order_id: str, region: str, sku: str, quantity: int) -> Quote:
        response = await _call(
            self.http,
            "carrier",
            self.timeout,
            "POST",
            "/quotes",
            json={"order_id": order_id, "region": region, "sku": sku, "quantity": quantity},
        )
        if response.status_code >= 400:
            raise StepRejected(_detail(response))
        return Quote.model_validate(response.json())

    async def set_trouble(self, trouble: Trouble) -> None:
        await _call(
            self.http, "carrier", self.timeout, "PUT", "/trouble", json=trouble.model_dump()
        )


# ---------------------------------------------------------------------------- wiring


@dataclass
class OutsideSystems:
    """The shop's clients of the outside systems, and how its breakers treat them.

    ``gateway`` and ``carrier`` are set only for a system running in this process, so
    its trouble knobs and books can be reached directly (demos and tests)."""

    payment_gateway: PaymentGateway
    carrier_quotes: CarrierQuotes
    failures: int = 3
    window: timedelta = timedelta(seconds=10)
    cooldown: timedelta = timedelta(seconds=2)
    gateway: Gateway | None = None
    carrier: Carrier | None = None
    _clients: list[httpx.AsyncClient] = field(default_factory=list, repr=False)

    @classmethod
    def connect(
        cls,
        *,
        gateway_url: str | None = None,
        carrier_url: str | None = None,
        timeout: float = 1.0,
        cooldown: timedelta = timedelta(seconds=2),
        seed: int = 0,
        regions: Iterable[str] = SUPPORTED_REGIONS,
    ) -> OutsideSystems:
        """Clients of the systems at these URLs; a system without a URL runs in-process."""
        gateway = None if gateway_url else Gateway(Knobs(seed=seed))
        carrier = None if carrier_url else Carrier(Knobs(seed=seed + 1), frozenset(regions))
        gateway_http = _client(gateway_url, gateway_app(gateway) if gateway else None, timeout)
        carrier_http = _client(carrier_url, carrier_app(carrier) if carrier else None, timeout)
        return cls(
            PaymentGateway(gateway_http, timeout),
            CarrierQuotes(carrier_http, timeout),
            cooldown=cooldown,
            gateway=gateway,
            carrier=carrier,
            _clients=[gateway_http, carrier_http],
        )

    def breaker(self, name: str) -> CircuitBreaker:
        return CircuitBreaker(
            name, failures=self.failures, window=self.window, cooldown=self.cooldown
        )

    async def close(self) -> None:
        for client in self._clients:
            await client.aclose()


def _client(url: str | None, app: FastAPI | None, timeout: float) -> httpx.AsyncClient:
    import httpx

    if url:
        return httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(timeout))
    assert app is not None
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://in-process", timeout=timeout
    )


def outside_ports(port: int) -> dict[str, int]:
    """Where ``sagakit up`` runs the outside systems by default: after the order API's
    port and the dashboard's."""
    return {"gateway": port + 2, "carrier": port + 3}


async def serve_outside(
    name: str,
    *,
    host: str,
    port: int,
    trouble: Trouble,
    seed: int = 0,
    books: Path | None = None,
) -> None:
    """Run the gateway or the carrier as a process of its own until it is stopped; the
    gateway keeps its books in ``books`` when given."""
    import uvicorn

    knobs = Knobs(trouble, seed=seed)
    gateway = None
    if name == "gateway":
        gateway = Gateway(knobs, books=books)
        app = gateway_app(gateway)
    elif name == "carrier":
        app = carrier_app(Carrier(knobs))
    else:
        raise ValueError(f"unknown outside system {name!r}; choose from {', '.join(OUTSIDE)}")
    config = uvicorn.Config(app, host=host, port=port, log_level="warning")
    try:
        await uvicorn.Server(config).serve()
    finally:
        if gateway is not None:
            gateway.close()
