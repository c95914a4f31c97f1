"""The outside systems the shop calls over HTTP, as the shop sees them: its clients.

The systems themselves, a payment gateway (:mod:`sagakit_shop.gateway`) and a carrier's
quotes (:mod:`sagakit_shop.carrier`), are not the shop's services: nothing of theirs is
in a saga's local transaction, and they can be slow or down. Each is a small FastAPI
app with trouble knobs (:mod:`sagakit_shop.trouble`): a 5xx or a timeout is the
dependency failing; a 4xx is a business answer (a region the carrier does not serve).

Embedded, the apps run in-process behind httpx's ASGI transport (no sockets);
distributed, ``sagakit up`` runs each as its own process and the services call their URLs.
The clients translate failures at the boundary: :class:`DependencyFailed` (transient, a
circuit breaker counts it) or :class:`StepRejected` (a refusal, never counted).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sagakit import CircuitBreaker, StepRejected, TransientError
from sagakit_shop.carrier import RATES, Carrier, Quote, QuoteRequest, carrier_app
from sagakit_shop.gateway import Authorization, AuthorizeRequest, Gateway, gateway_app
from sagakit_shop.trouble import Knobs, Trouble
from sagakit_shop.world import SUPPORTED_REGIONS

if TYPE_CHECKING:
    import httpx
    from fastapi import FastAPI

__all__ = [
    "CARRIER_BREAKER",
    "GATEWAY_BREAKER",
    "OUTSIDE",
    "RATES",
    "Authorization",
    "AuthorizeRequest",
    "Carrier",
    "CarrierQuotes",
    "DependencyFailed",
    "Gateway",
    "Knobs",
    "OutsideSystems",
    "PaymentGateway",
    "Quote",
    "QuoteRequest",
    "Trouble",
    "carrier_app",
    "gateway_app",
    "outside_ports",
    "serve_outside",
]

#: The breakers the shop's services keep, one per outside system.
GATEWAY_BREAKER = "payment-gateway"
CARRIER_BREAKER = "carrier-quote"

#: The outside systems' processes under ``sagakit up`` (next to the shop's own).
OUTSIDE: tuple[str, ...] = ("gateway", "carrier")


class DependencyFailed(TransientError):
    """An outside system failed (5xx, timeout, unreachable): the step is retried, and the
    breaker in front of the system counts it."""


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
