"""``sagakit demo``: the whole shop in one process on the embedded default.

Five services, each with its own SQLite file, take a batch of orders through the order
saga. Some orders are set up to fail (no stock, a declined card, no funds, a region
the carrier does not serve) and the mail server is sometimes busy. The story of every
order prints as it happens; then a summary, and the check that nothing was lost.

The payment gateway and the carrier run in-process unless their URLs are given. A
gateway outage (``--gateway-outage SECONDS``) shows the circuit breaker open, the charges
deferred rather than compensated, and the breaker close again once the gateway is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sagakit import Runtime, outcomes
from sagakit.ports import DeadLetterQueue
from sagakit.stores.dead_letters import SqlDeadLetters
from sagakit.transports.memory import MemoryTransport
from sagakit_shop.app import SAGA, Mode, Shop, embedded_files, embedded_urls, open_stores
from sagakit_shop.outside import OutsideSystems, Trouble
from sagakit_shop.saga import ORDER_SAGA
from sagakit_shop.verify import Report, in_flight, verify
from sagakit_shop.world import default_world, plan_orders

if TYPE_CHECKING:
    from sagakit.api import Token


@dataclass
class DemoResult:
    summary: dict[str, Any]
    report: Report
    saga_db: str
    sample_failed: str | None
    sample_done: str | None
    #: The stores of the services that keep circuit breakers (for ``sagakit breakers``).
    breaker_dbs: list[str]


async def run_demo(
    directory: Path,
    *,
    orders: int,
    fail_rate: float,
    seed: int,
    concurrency: int,
    mode: Mode,
    timeout: float = 300.0,
    serve: tuple[str, int, int] | None = None,
    on_serving: Any = None,
    tokens: list[Token] | None = None,
    gateway_outage: float = 0.0,
    gateway_url: str | None = None,
    carrier_url: str | None = None,
) -> DemoResult:
    await asyncio.to_thread(_fresh, directory)
    urls = embedded_urls(directory)
    outside = OutsideSystems.connect(gateway_url=gateway_url, carrier_url=carrier_url, seed=seed)
    shop = Shop(open_stores(urls), mode=mode, fail_rate=fail_rate, seed=seed, outside=outside)
    world = default_world(orders=orders)
    await shop.setup(world)
    # In one process nothing survives a crash anyway, so redeliveries need not wait long.
    dead_letters = SqlDeadLetters(shop.stores[SAGA])
    transport = MemoryTransport(
        retry_tiers=(0.1, 0.3, 1.0, 3.0), max_deliveries=10, dead_letters=dead_letters
    )
    runtime = Runtime(transport).add(*shop.components())
    plan = plan_orders(world, orders, fail_rate=fail_rate, seed=seed)
    if gateway_outage > 0:
        await outside.payment_gateway.set_trouble(Trouble(down_for_s=gateway_outage))
    started = time.perf_counter()
    async with runtime:
        gate = asyncio.Semaphore(concurrency)

        async def place(customer: str, sku: str, quantity: int) -> str:
            async with gate:
                return (await shop.place(customer, sku, quantity)).order_id

        ids = await asyncio.gather(*(place(o.customer_id, o.sku, o.quantity) for o in plan))
        with contextlib.suppress(TimeoutError):  # what is still running is reported below
            await outcomes([shop.saga(i) for i in ids], timeout=timeout)
        elapsed = time.perf_counter() - started
        if serve is not None:
            await _serve(shop, dead_letters, serve, on_serving, tokens)
    report = await verify(shop.stores)
    statuses = Counter(report.sagas)
    summary = {
        "orders": orders,
        "completed": statuses.get("completed", 0),
        "compensated": statuses.get("compensated", 0),
        "needs_attention": statuses.get("needs_attention", 0),
        "in_flight": await in_flight(shop.stores),
        "invariants": report.holds(),
        "elapsed_s": round(elapsed, 3),
        "sagas_per_s": round(orders / elapsed, 1) if elapsed else 0.0,
        "breakers": _breakers(shop),
    }
    rows = await shop.saga_store.list_sagas(limit=orders)
    failed = next((r.saga_id for r in rows if r.status == "compensated"), None)
    done = next((r.saga_id for r in rows if r.status == "completed"), None)
    await shop.close()
    keepers = [urls[n] for n, service in shop.services.items() if service.participant.breakers]
    return DemoResult(summary, report, urls[SAGA], failed, done, keepers)


def _breakers(shop: Shop) -> dict[str, dict[str, Any]]:
    """Each breaker in front of an outside system: where it stands, how often it changed
    state, and how many steps it deferred while open."""
    return {
        name: {
            "state": breaker.state.value,
            "transitions": breaker.transitions,
            "deferred": breaker.rejected,
        }
        for service in shop.services.values()
        for name, breaker in service.participant.breakers.items()
    }


def _fresh(directory: Path) -> None:
    """A fresh shop, without touching anything else in the directory."""
    directory.mkdir(parents=True, exist_ok=True)
    for path in embedded_files(directory):
        path.unlink(missing_ok=True)


async def _serve(
    shop: Shop,
    dead_letters: DeadLetterQueue,
    where: tuple[str, int, int],
    on_serving: Any,
    tokens: list[Token] | None,
) -> None:
    """The order API and the dashboard with its admin API, on ``where``'s two ports
    (order API first, as ``sagakit up`` has them), until Ctrl-C. Tokens come from
    SAGAKIT_TOKENS, or are made up for this run."""
    import uvicorn

    from sagakit.api import AdminConfig, create_admin_app
    from sagakit.api.auth import fresh_tokens, tokens_from
    from sagakit.api.guard import max_body_from
    from sagakit_shop.api import MAX_BODY, create_app

    host, orders_at, admin_at = where
    tokens = tokens or tokens_from() or fresh_tokens()
    admin = create_admin_app(
        AdminConfig(
            saga_store=shop.saga_store,
            definitions=[ORDER_SAGA],
            tokens=tokens,
            stores=[store for name, store in shop.stores.items() if name != SAGA],
            dead_letters=dead_letters,
            metrics=shop.metrics,
            trace_url=os.environ.get("SAGAKIT_TRACE_URL") or None,
            max_body=max_body_from(os.environ),
        )
    )
    orders = create_app(shop, max_body=max_body_from(os.environ, MAX_BODY))
    servers = [
        # a dashboard's open stream must not hold Ctrl-C up: its connection is cut after 2s
        uvicorn.Server(
            uvicorn.Config(
                app, host=host, port=at, log_level="warning", timeout_graceful_shutdown=2
            )
        )
        for app, at in ((admin, admin_at), (orders, orders_at))
    ]
    if on_serving is not None:
        on_serving(f"http://{host}:{admin_at}", f"http://{host}:{orders_at}", tokens)
    running = [asyncio.create_task(server.serve()) for server in servers]
    await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
    for server in servers:  # Ctrl-C reaches one of them; stop the other too
        server.should_exit = True
    await asyncio.gather(*running, return_exceptions=True)
