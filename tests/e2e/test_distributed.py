"""The shop distributed: real processes over the real PostgreSQL and RabbitMQ.

`sagakit up` starts a process per service, the orchestrator (or tracker) and the relay.
Orders go in through the HTTP API; one service is SIGKILLed mid-run and the supervisor
starts it again; then `sagakit verify` must find every saga ended and the books straight.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from sagakit.transports import open_transport
from sagakit.transports.rabbitmq import RabbitTransport
from sagakit_shop.app import open_stores
from sagakit_shop.distributed import database_urls, queue_names
from sagakit_shop.verify import verify
from tests.conftest import AMQP_URL, PG_ADMIN, drop_pg_database, open_rabbit

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]


def pids_of(stem: str, name: str) -> list[int]:
    """The processes running `sagakit service <name>` for this test's databases."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in argv]
        if "service" in words and name in words and any(stem in w for w in words):
            found.append(int(entry.name))
    return found


def free_block(size: int = 5) -> int:
    """A first port whose ``size`` ports in a row are free now, below the kernel's range
    for outgoing connections, so none of them is taken by a client between this check
    and ``sagakit up`` binding it (it serves on port, port+1 ... port+4)."""
    rng = random.Random()
    for _ in range(200):
        first = rng.randrange(20_000, 32_000 - size)
        try:
            with contextlib.ExitStack() as held:
                for port in range(first, first + size):
                    probe = held.enter_context(socket.socket())
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise AssertionError(f"no {size} free ports in a row")


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:]


async def wait_healthy(api: str, up: asyncio.subprocess.Process, log: Path) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(300):
            if up.returncode is not None:
                raise AssertionError(f"sagakit up exited early:\n{_tail(log)}")
            try:
                if (await client.get(f"{api}/health")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"the order API never came up:\n{_tail(log)}")


async def place(client: httpx.AsyncClient, api: str, orders: list[tuple[str, str, int]]) -> None:
    for customer, sku, quantity in orders:
        placed = await client.post(
            f"{api}/orders", json={"customer_id": customer, "sku": sku, "quantity": quantity}
        )
        assert placed.status_code == 201, placed.text


ORDERS = [
    ("c-ada", "lamp", 1),
    ("c-grace", "mug", 2),
    ("c-alan", "chair", 1),
    ("c-mallory", "mug", 1),
    ("c-edsger", "lamp", 2),
    ("c-penguin", "lamp", 1),
    ("c-barbara", "globe", 1000),
    ("c-trudy", "chair", 1),
    ("c-ada", "mug", 3),
    ("c-grace", "lamp", 1),
]


@pytest.fixture
async def distributed() -> AsyncIterator[tuple[str, str]]:
    """A fresh database stem and a broker URL with a queue prefix of its own (short retry
    tiers keep a busy mail server from stretching the test); both cleaned away after."""
    stem = f"sagakit_e2e_{uuid.uuid4().hex[:8]}"
    prefix = f"sagakit-e2e-{uuid.uuid4().hex[:8]}."
    broker = f"{AMQP_URL}?prefix={prefix}&retry_tiers=0.1,0.5,1,2&max_deliveries=8"
    probe = await open_rabbit(AMQP_URL)  # skips (or fails in CI) when RabbitMQ is down
    await probe.teardown()
    await probe.close()
    yield stem, broker
    for url in database_urls(PG_ADMIN.rsplit("/", 1)[0] + f"/{stem}").values():
        await drop_pg_database(url)
    cleaner = open_transport(broker)
    assert isinstance(cleaner, RabbitTransport)
    await cleaner.start()
    for mode in ("orchestration", "choreography"):
        for queue in queue_names(mode):  # type: ignore[arg-type]
            await cleaner.declare(queue)
    await cleaner.teardown()
    await cleaner.close()


@pytest.mark.parametrize("mode", ["orchestration", "choreography"])
async def test_the_distributed_shop_survives_a_killed_service_and_balances(
    distributed: tuple[str, str], mode: str, tmp_path: Path
) -> None:
    port = free_block()
    log = tmp_path / "up.log"
    stem, broker = distributed
    db = PG_ADMIN.rsplit("/", 1)[0] + f"/{stem}"
    api = f"http://127.0.0.1:{port}"
    admin = f"http://127.0.0.1:{port + 1}"
    viewer = "e2e-viewer-secret-0123456789"
    spans = tmp_path / "spans"
    output = log.open("wb")  # the services' logs too: a pipe could fill
    up = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sagakit",
        "up",
        "--db",
        db,
        "--broker",
        broker,
        "--mode",
        mode,
        "--port",
        str(port),
        "--fail-rate",
        "0.2",
        "--gateway-books",
        str(tmp_path / "gateway.db"),
        cwd=ROOT,
        env={
            **os.environ,
            "COLUMNS": "200",
            "SAGAKIT_TRACE_FILE": f"{spans}/{{pid}}.jsonl",
            "SAGAKIT_TOKENS": f"viewer:e2e:{viewer}",
        },
        stdout=output,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        await wait_healthy(api, up, log)
        async with httpx.AsyncClient(timeout=10) as client:
            await place(client, api, ORDERS)
            [payment] = pids_of(stem, "payment")
            os.kill(payment, signal.SIGKILL)  # mid-run: some of those orders are at payment
            await place(client, api, ORDERS * 2)
        for _ in range(300):
            restarted = pids_of(stem, "payment")
            if restarted and restarted != [payment]:
                break
            await asyncio.sleep(0.1)
        assert restarted and restarted != [payment], "the supervisor did not restart payment"
        stores = open_stores(database_urls(db))
        try:
            for _ in range(600):
                report = await verify(stores)
                if not report.violations["terminal"] and sum(report.sagas.values()) == 30:
                    break
                await asyncio.sleep(0.2)
            stuck = {
                row.saga_id: [e.type for e in await stores["saga"].history(row.saga_id)]
                for row in await stores["saga"].list_sagas(status="running")
            }
        finally:
            for store in stores.values():
                await store.close()
        assert report.ok, "\n".join(f"{k}: {v}" for k, v in stuck.items())
        # per batch of ten: six go through; a declined card, an unserved region, a
        # thousand globes and an empty purse do not
        assert report.sagas == {"completed": 18, "compensated": 12}
        # The dashboard's admin API, served by `sagakit up` itself, sees the same sagas.
        async with httpx.AsyncClient(timeout=10) as client:
            token = {"Authorization": f"Bearer {viewer}"}
            stats = (await client.get(f"{admin}/api/stats", headers=token)).json()
            assert stats["sagas"] == {"completed": 18, "compensated": 12}
            assert (await client.get(f"{admin}/api/stats")).status_code == 401
            if mode == "orchestration":  # the deciding process serves its own counters
                scraped = await client.get(f"http://127.0.0.1:{port + 4}/metrics")
                counted = {
                    line.split(" ")[0]: float(line.split(" ")[1])
                    for line in scraped.text.splitlines()
                    if line.startswith("sagakit_sagas_") and not line.startswith("#")
                }
                assert counted['sagakit_sagas_started_total{definition="order"}'] == 30
                finished = {k: v for k, v in counted.items() if "finished_total" in k}
                assert sum(finished.values()) == 30, finished
        checked = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sagakit",
            "verify",
            "--db",
            db,
            "--json",
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await checked.communicate()
        assert checked.returncode == 0
        assert json.loads(out)["invariants"] == {
            "money": True,
            "stock": True,
            "once": True,
            "terminal": True,
        }
    finally:
        if up.returncode is None:
            up.send_signal(signal.SIGTERM)
            await asyncio.wait_for(up.wait(), 30)
    output.close()
    assert up.returncode == 0
    printed = log.read_text(errors="replace")
    assert f"dashboard: {admin}/" in printed
    assert "sign in with a token from SAGAKIT_TOKENS: viewer e2e (e2e-…)" in printed
    assert viewer not in printed  # a configured secret is never printed
    assert pids_of(stem, "payment") == [] and pids_of(stem, "order") == []
    # One order is one trace, across every service process that touched it.
    records = [
        json.loads(line) for f in spans.glob("*.jsonl") for line in f.read_text().splitlines()
    ]
    first = [r for r in records if r["attributes"].get("saga.id") == "order-101"]
    assert len({r["trace_id"] for r in first}) == 1, first
    processes = {r["service"] for r in first}
    assert {"shop-saga", "shop-order", "shop-payment", "shop-shipping"} <= processes or (
        mode == "choreography" and {"shop-order", "shop-payment", "shop-shipping"} <= processes
    ), processes
