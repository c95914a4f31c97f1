"""The shop's outside systems: a payment gateway and a carrier, called through breakers.

The HTTP services are checked on their own first (idempotency, trouble, refusals);
then the shop runs over the real PostgreSQL and RabbitMQ while the gateway fails:
its breaker opens, charges are deferred rather than compensated, and once the
gateway heals the breaker closes and every order goes through, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from sagakit import Runtime, StepRejected, UnknownSagaError, outcomes
from sagakit.cli.app import app
from sagakit.engine.breakers import BreakerState, CircuitBreaker, dependency_failure
from sagakit.stores.sql import SqlSagaStore
from sagakit.transports.rabbitmq import RabbitTransport
from sagakit_shop.app import STORE_NAMES, Shop, open_stores
from sagakit_shop.outside import (
    CARRIER_BREAKER,
    GATEWAY_BREAKER,
    DependencyFailed,
    Gateway,
    OutsideSystems,
    Trouble,
)
from sagakit_shop.services.payment import authorizations, payments
from sagakit_shop.services.shipping import quotes
from sagakit_shop.verify import verify
from sagakit_shop.world import default_world
from tests.conftest import create_pg_database, drop_pg_database, open_rabbit

GOOD = ["c-ada", "c-grace", "c-alan", "c-edsger", "c-barbara"]


async def until(check: Callable[[], Awaitable[bool]], *, timeout: float, what: str) -> None:
    for _ in range(int(timeout / 0.02)):
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"waited {timeout}s for {what}")


# ------------------------------------------------------------------ the HTTP services


async def test_the_gateway_authorizes_once_per_idempotency_key() -> None:
    outside = OutsideSystems.connect()
    gateway, client = outside.gateway, outside.payment_gateway
    assert gateway is not None
    try:
        first = await client.authorize(
            key="o1/charge", order_id="o1", customer_id="c", amount_cents=500
        )
        again = await client.authorize(
            key="o1/charge", order_id="o1", customer_id="c", amount_cents=500
        )
        replayed = await client.http.post(
            "/authorizations",
            headers={"Idempotency-Key": "o1/charge"},
            json={"order_id": "o1", "customer_id": "c", "amount_cents": 500},
        )
        assert again == first and replayed.json()["id"] == first.id
        assert (replayed.status_code, replayed.headers["Idempotent-Replayed"]) == (200, "true")
        with pytest.raises(StepRejected, match="used for another request"):
            await client.authorize(key="o1/charge", order_id="o1", customer_id="c", amount_cents=9)
        other = await client.authorize(
            key="o2/charge", order_id="o2", customer_id="c", amount_cents=5
        )
        assert other.id != first.id
        assert [a.id for a in await client.authorizations()] == [first.id, other.id]
        assert await client.void(first.id) and await client.void(first.id)  # voiding twice is fine
        assert not await client.void("auth_unknown")  # nothing held there
        assert gateway.by_id[first.id].status == "voided"
        assert gateway.replays == 2
    finally:
        await outside.close()


def test_a_gateway_killed_and_started_again_still_knows_its_keys(tmp_path: Path) -> None:
    """The gateway as ``sagakit up`` runs it, a process with its books in a file: killed
    between a charge and its retry, the gateway started again answers the retry with the
    first authorization (a replay), not a second hold on the card; a void outlives it too."""
    import httpx

    books = tmp_path / "gateway.db"
    body = {"order_id": "o1", "customer_id": "c-ada", "amount_cents": 500}

    def started() -> tuple[subprocess.Popen[bytes], str]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        argv = [sys.executable, "-m", "sagakit", "service", "gateway",
                "--port", str(port), "--books", str(books)]  # fmt: skip
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    return process, url
            time.sleep(0.05)
        process.kill()
        raise AssertionError("the gateway did not come up")

    first_run, url = started()
    try:
        made = httpx.post(
            f"{url}/authorizations", json=body, headers={"Idempotency-Key": "o1/charge"}
        )
        other = httpx.post(
            f"{url}/authorizations", json={**body, "order_id": "o2"},
            headers={"Idempotency-Key": "o2/charge"},
        )  # fmt: skip
        assert (made.status_code, other.status_code) == (201, 201)
        assert httpx.post(f"{url}/authorizations/{other.json()['id']}/void").status_code == 200
    finally:
        first_run.kill()  # SIGKILL: nothing is flushed on the way out
        first_run.wait()
    second_run, url = started()
    try:
        retried = httpx.post(
            f"{url}/authorizations", json=body, headers={"Idempotency-Key": "o1/charge"}
        )
        held = {a["id"]: a["status"] for a in httpx.get(f"{url}/authorizations").json()}
    finally:
        second_run.kill()
        second_run.wait()
    assert retried.status_code == 200 and retried.headers["Idempotent-Replayed"] == "true"
    assert retried.json()["id"] == made.json()["id"]
    assert held == {made.json()["id"]: "authorized", other.json()["id"]: "voided"}


async def test_a_slow_answer_hides_a_success_that_the_retry_gets_back() -> None:
    outside = OutsideSystems.connect(timeout=0.2)
    gateway, client = outside.gateway, outside.payment_gateway
    assert gateway is not None
    try:
        await client.set_trouble(Trouble(delay_s=0.5))
        with pytest.raises(DependencyFailed, match=r"no answer within 0\.2s"):
            await client.authorize(key="o1/charge", order_id="o1", customer_id="c", amount_cents=5)
        assert len(gateway.by_id) == 1  # the gateway did authorize; the answer was lost
        await client.set_trouble(Trouble())
        retried = await client.authorize(
            key="o1/charge", order_id="o1", customer_id="c", amount_cents=5
        )
        assert list(gateway.by_id) == [retried.id]
    finally:
        await outside.close()


async def test_trouble_is_a_dependency_failure_and_a_refusal_is_not() -> None:
    outside = OutsideSystems.connect(seed=3)
    gateway, carrier = outside.gateway, outside.carrier
    assert gateway is not None and carrier is not None
    try:
        await outside.payment_gateway.set_trouble(Trouble(down_for_s=0.3))
        with pytest.raises(DependencyFailed, match="503") as down:
            await outside.payment_gateway.authorize(
                key="k", order_id="o", customer_id="c", amount_cents=5
            )
        assert dependency_failure(down.value) and not gateway.by_id  # failed before any effect
        trouble = (await outside.payment_gateway.http.get("/trouble")).json()
        assert 0 < trouble["down_for_s"] <= 0.3
        await asyncio.sleep(0.35)  # a timed outage ends by itself
        await outside.payment_gateway.authorize(
            key="k", order_id="o", customer_id="c", amount_cents=5
        )

        await outside.carrier_quotes.set_trouble(Trouble(fail_rate=0.5))
        outcomes = Counter[str]()
        for n in range(40):
            try:
                await outside.carrier_quotes.quote(
                    order_id=f"o{n}", region="eu", sku="lamp", quantity=1
                )
                outcomes["ok"] += 1
            except DependencyFailed:
                outcomes["failed"] += 1
        assert outcomes["ok"] > 5 and outcomes["failed"] > 5
        await outside.carrier_quotes.set_trouble(Trouble())

        breaker = CircuitBreaker(CARRIER_BREAKER, failures=1)
        with pytest.raises(StepRejected, match="does not serve antarctica"):
            async with breaker:
                await outside.carrier_quotes.quote(
                    order_id="o", region="antarctica", sku="lamp", quantity=1
                )
        assert breaker.state is BreakerState.CLOSED  # a refusal is an answer, not a failure
        quote = await outside.carrier_quotes.quote(
            order_id="o", region="apac", sku="mug", quantity=3
        )
        assert (quote.region, quote.price_cents, quote.eta_days) == ("apac", 12_90 + 3 * 2_00, 6)
    finally:
        await outside.close()


async def test_an_unreachable_gateway_is_a_dependency_failure() -> None:
    outside = OutsideSystems.connect(gateway_url="http://127.0.0.1:9", timeout=0.5)
    try:
        with pytest.raises(DependencyFailed, match="payment gateway"):
            await outside.payment_gateway.authorize(
                key="k", order_id="o", customer_id="c", amount_cents=5
            )
    finally:
        await outside.close()


# ------------------------------------------------------------------ the shop, for real


@dataclass
class RealShop:
    shop: Shop
    runtime: Runtime
    urls: dict[str, str]

    @property
    def gateway(self) -> Gateway:
        assert self.shop.outside is not None and self.shop.outside.gateway is not None
        return self.shop.outside.gateway

    def breaker(self, service: str, name: str) -> CircuitBreaker:
        return self.shop.services[service].participant.breakers[name]

    async def place(self, customers: list[str], sku: str = "lamp") -> list[str]:
        return [(await self.shop.place(c, sku, 1)).order_id for c in customers]

    async def statuses(self) -> Counter[str]:
        return Counter(r.status for r in await self.shop.saga_store.list_sagas(limit=100))

    async def breakers_cli(self) -> str:
        shown = await asyncio.to_thread(
            CliRunner().invoke,
            app,
            ["breakers", "--db", self.urls["payment"], "--db", self.urls["shipping"]],
            env={"COLUMNS": "200"},
        )
        assert shown.exit_code == 0, shown.output
        return shown.output


@pytest.fixture
async def real_shop(request: pytest.FixtureRequest) -> AsyncIterator[RealShop]:
    """The shop with a database per store on PostgreSQL and its queues on RabbitMQ; the
    gateway and the carrier in-process; breakers that cool down in half a second."""
    timeout = getattr(request, "param", 1.0)
    created = await asyncio.gather(*(create_pg_database() for _ in STORE_NAMES))
    urls = dict(zip(STORE_NAMES, created, strict=True))
    transport: RabbitTransport | None = None
    try:
        transport = await open_rabbit()
        outside = OutsideSystems.connect(timeout=timeout, cooldown=timedelta(seconds=0.5))
        shop = Shop(open_stores(urls), outside=outside)
        await shop.setup(default_world(orders=20))
        runtime = Runtime(transport, timer_interval=0.05, relay_poll=0.1)
        async with runtime.add(*shop.components()):
            yield RealShop(shop, runtime, urls)
        await shop.close()
    finally:
        if transport is not None:
            await transport.teardown()
            await transport.close()
        await asyncio.gather(*(drop_pg_database(url) for url in urls.values()))


async def _rows(store: SqlSagaStore, query: Any) -> list[Any]:
    async with store.unit() as unit:
        return list(await unit.connection.execute(query))


async def test_a_gateway_outage_defers_charges_and_the_breaker_closes_when_it_heals(
    real_shop: RealShop,
) -> None:
    s = real_shop
    breaker = s.breaker("payment", GATEWAY_BREAKER)
    s.gateway.knobs.set(Trouble(down=True))
    ids = await s.place(GOOD * 2)

    async def deferred() -> bool:
        histories = []
        for i in ids:
            with contextlib.suppress(UnknownSagaError):  # its start is still in the outbox
                histories.append(await s.shop.saga_store.history(i))
        return any('"deferred":true' in e.data for h in histories for e in h)

    await until(deferred, timeout=15, what="a charge deferred by the open breaker")
    assert breaker.state is not BreakerState.CLOSED
    shown = await s.breakers_cli()
    assert "payment-gateway" in shown and "open" in shown
    await asyncio.sleep(1.2)  # two cool-downs: the trials fail and the breaker opens again
    assert set(await s.statuses()) == {"running"}  # nobody compensated for an outage
    # it opened after 3 failures; since then only its half-open trials reach the gateway
    assert breaker.rejected > s.gateway.knobs.failed

    s.gateway.knobs.set(Trouble())  # the gateway is back
    statuses = await outcomes([s.shop.saga(i) for i in ids], timeout=30)
    assert set(statuses.values()) == {"completed"}
    assert breaker.state is BreakerState.CLOSED
    assert breaker.transitions >= 3  # open, half-open, closed (and maybe round again)
    assert "closed" in await s.breakers_cli()
    report = await verify(s.shop.stores)
    assert report.ok, report.violations
    held = Counter(a.order_id for a in s.gateway.by_id.values())
    assert held == dict.fromkeys(ids, 1)  # one authorization per order at the gateway
    kept = await _rows(s.shop.stores["payment"], select(authorizations))
    assert {(r.order_id, r.authorization_id) for r in kept} == {
        (a.order_id, a.id) for a in s.gateway.by_id.values()
    }
    assert s.breaker("shipping", CARRIER_BREAKER).state is BreakerState.CLOSED


@pytest.mark.parametrize("real_shop", [0.3], indirect=True)
async def test_a_charge_whose_answer_was_lost_is_authorized_once(real_shop: RealShop) -> None:
    s = real_shop
    s.gateway.knobs.set(Trouble(delay_s=0.6))  # authorizes, then answers after the timeout
    ids = await s.place(GOOD[:3])

    async def all_authorized() -> bool:
        return len(s.gateway.by_id) == 3

    await until(all_authorized, timeout=15, what="the gateway to authorize every order")
    assert not await _rows(s.shop.stores["payment"], select(payments))
    s.gateway.knobs.set(Trouble())
    statuses = await outcomes([s.shop.saga(i) for i in ids], timeout=30)
    assert set(statuses.values()) == {"completed"}
    assert len(s.gateway.by_id) == 3 and s.gateway.replays >= 3  # the retries got them back
    assert (await verify(s.shop.stores)).ok


async def test_the_carrier_refusing_a_region_compensates_and_voids_the_charge(
    real_shop: RealShop,
) -> None:
    s = real_shop
    [far, near] = await s.place(["c-penguin", "c-ada"])
    statuses = await outcomes([s.shop.saga(far), s.shop.saga(near)], timeout=30)
    assert statuses == {far: "compensated", near: "completed"}
    assert "does not serve antarctica" in str((await s.shop.saga_store.get(far)).reason)
    by_order = {a.order_id: a for a in s.gateway.by_id.values()}
    assert (by_order[far].status, by_order[near].status) == ("voided", "authorized")
    kept = await _rows(s.shop.stores["payment"], select(authorizations))
    assert {(r.order_id, r.status) for r in kept} == {
        (far, "voided"),
        (near, "authorized"),
    }
    booked = await _rows(s.shop.stores["shipping"], select(quotes))
    assert [r.order_id for r in booked] == [near]
    carrier = s.breaker("shipping", CARRIER_BREAKER)
    assert (carrier.state, carrier.recent) == (BreakerState.CLOSED, [])  # a refusal: no failure
    assert (await verify(s.shop.stores)).ok


def test_up_keeps_the_gateway_books_per_stem_and_starts_them_over_with_the_orders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sagakit_shop.cli import gateway_books_for

    monkeypatch.chdir(tmp_path)
    db = "postgresql://postgres@127.0.0.1:5432/shop2"
    books = gateway_books_for(db, None, [])
    assert books == Path(".sagakit/gateway-shop2.db")
    books.parent.mkdir()
    for suffix in ("", "-wal"):
        Path(f"{books}{suffix}").write_text("an earlier run's authorizations")
    assert gateway_books_for(db, None, ["shop2_payment"]).exists()  # orders go on: kept
    assert gateway_books_for(db, None, ["shop2_order", "shop2_payment"]) == books
    assert not books.exists() and not Path(f"{books}-wal").exists()  # numbered from 1 again
    chosen = tmp_path / "elsewhere.db"
    assert gateway_books_for(db, chosen, []) == chosen
