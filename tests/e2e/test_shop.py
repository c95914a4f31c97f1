"""The shop as a user first meets it: `sagakit demo`, and the order API."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from sagakit import Runtime
from sagakit.transports.memory import MemoryTransport
from sagakit_shop.api import create_app
from sagakit_shop.app import Shop, embedded_urls, open_stores
from sagakit_shop.verify import verify
from sagakit_shop.world import default_world

SAGAKIT = str(Path(sys.executable).parent / "sagakit")
ENV = {**os.environ, "COLUMNS": "200"}


def sagakit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SAGAKIT, *args], capture_output=True, text=True, timeout=120, env=ENV, cwd=cwd, check=False
    )


@pytest.mark.parametrize("mode", ["orchestration", "choreography"])
def test_demo_json_reports_every_order_ended_and_the_books_balance(
    tmp_path: Path, mode: str
) -> None:
    done = sagakit(
        "demo", "--orders", "40", "--mode", mode, "--json", "--dir", "shop", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report) == {
        "orders",
        "completed",
        "compensated",
        "needs_attention",
        "in_flight",
        "invariants",
        "elapsed_s",
        "sagas_per_s",
        "breakers",
    }
    assert report["orders"] == 40
    assert report["completed"] + report["compensated"] == 40
    assert report["completed"] > 0 and report["compensated"] > 0
    assert (report["needs_attention"], report["in_flight"]) == (0, 0)
    assert report["invariants"] == {"money": True, "stock": True, "once": True, "terminal": True}
    assert report["sagas_per_s"] > 0
    # a healthy gateway and carrier: their breakers never opened
    assert report["breakers"] == {
        name: {"state": "closed", "transitions": 0, "deferred": 0}
        for name in ("payment-gateway", "carrier-quote")
    }


def test_demo_tells_the_story_and_the_commands_it_prints_work(tmp_path: Path) -> None:
    done = sagakit("demo", "--orders", "12", "--seed", "3", "--dir", "shop", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    story = done.stderr
    assert "[order] Order #101 placed:" in story
    assert "[payment] Charged $" in story
    assert "[inventory] Reserved" in story
    assert "[orchestrator]" in story and "compensating because" in story
    for invariant in ("money", "stock", "once", "terminal"):
        assert any(invariant in line and "holds" in line for line in done.stdout.splitlines())
    commands = [
        line[line.index("sagakit ") :].strip()
        for line in done.stdout.splitlines()
        if "sagakit " in line
    ]
    assert commands and commands[0].startswith("sagakit list --db")
    for command in commands:
        ran = sagakit(*command.split()[1:], cwd=tmp_path)
        assert ran.returncode == 0, f"{command}: {ran.stderr}"
    assert "SagaCompensated" in sagakit(*commands[1].split()[1:], cwd=tmp_path).stdout


def test_demo_keeps_files_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    done = sagakit("demo", "--orders", "2", "--json", "--dir", ".", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.fixture
async def shop(tmp_path: Path) -> AsyncIterator[Shop]:
    opened = Shop(open_stores(embedded_urls(tmp_path)))
    await opened.setup(default_world(orders=10))
    async with Runtime(MemoryTransport()).add(*opened.components()):
        yield opened
    await opened.close()


async def test_the_order_api_places_an_order_that_runs_its_saga(shop: Shop) -> None:
    transport = httpx.ASGITransport(app=create_app(shop))
    async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
        placed = await client.post(
            "/orders", json={"customer_id": "c-ada", "sku": "lamp", "quantity": 2}
        )
        assert placed.status_code == 201, placed.text
        order = placed.json()
        assert (order["status"], order["amount"], order["number"]) == ("new", "$50.00", 101)
        for _ in range(200):
            status = (await client.get(f"/orders/{order['order_id']}")).json()["status"]
            if status == "approved":
                break
            await asyncio.sleep(0.02)
        assert status == "approved"
        assert (await client.get("/orders?status=approved")).json()[0]["order_id"] == "order-101"
        assert (await client.get("/orders/order-999")).status_code == 404
    assert (await verify(shop.stores)).ok


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"customer_id": "c-ada", "sku": "lamp", "quantity": 0}, "greater than 0"),
        ({"customer_id": "c-ada", "sku": "lamp", "quantity": -3}, "greater than 0"),
        ({"customer_id": "c-ada", "sku": "lamp", "quantity": "2"}, "valid integer"),
        ({"customer_id": "c-nobody", "sku": "lamp", "quantity": 1}, "unknown customer 'c-nobody'"),
        ({"customer_id": "c-ada", "sku": "yacht", "quantity": 1}, "unknown item 'yacht'"),
        ({"customer_id": "c-ada", "sku": "lamp"}, "Field required"),
        ({"customer_id": "c-ada", "sku": "lamp", "quantity": 1, "coupon": "X"}, "Extra inputs"),
    ],
)
async def test_bad_orders_get_a_clear_4xx_and_write_nothing(
    shop: Shop, body: dict[str, object], message: str
) -> None:
    transport = httpx.ASGITransport(app=create_app(shop))
    async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
        refused = await client.post("/orders", json=body)
        assert refused.status_code == 422
        assert message in refused.text
        malformed = await client.post(
            "/orders", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert malformed.status_code == 422
        assert (await client.get("/orders")).json() == []
    assert await shop.saga_store.list_sagas() == []


async def test_order_place_with_a_key_places_once_and_order_show_prints_as_text(
    shop: Shop, unused_tcp_port: int
) -> None:
    import uvicorn

    from tests.e2e.helpers import sagakit

    server = uvicorn.Server(
        uvicorn.Config(create_app(shop), host="127.0.0.1", port=unused_tcp_port, log_level="error")
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no event to wait on
        await asyncio.sleep(0.01)
    api = f"http://127.0.0.1:{unused_tcp_port}"
    try:
        place = ("order", "place", "--customer", "c-ada", "--sku", "lamp", "--api", api)
        first = await asyncio.to_thread(sagakit, *place, "--key", "retry-1")
        again = await asyncio.to_thread(sagakit, *place, "--key", "retry-1")
        other = await asyncio.to_thread(sagakit, *place, "--quantity", "2", "--key", "retry-1")
        shown = await asyncio.to_thread(sagakit, "order", "show", "order-101", "--api", api)
    finally:
        server.should_exit = True
        await serving
    assert first.code == 0 and first.out.startswith("placed order-101: 1 x lamp"), first
    assert again.code == 0 and again.out.startswith("placed order-101: 1 x lamp"), again
    assert other.code == 1 and "409" in other.err and "different order" in other.err, other
    assert shown.code == 0 and shown.out.startswith("order-101: "), shown
