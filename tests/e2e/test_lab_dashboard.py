"""Lab 9, the tracing dashboard: its figures checked against the saga log it left, and
its address opened in the system Chromium on the failed order's timeline."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from sagakit.model.events import decode
from sagakit.observe import tracing
from sagakit.stores.sql import SqlSagaStore
from sagakit_shop.app import SAGA, embedded_urls, open_stores
from sagakit_shop.labs import dashboard_timeline
from tests.e2e.dashboard_kit import ARTIFACTS, CHROMIUM, missing

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def saga_store(tmp_path: Path) -> AsyncIterator[SqlSagaStore]:
    """The saga log a lab run in ``tmp_path`` leaves behind, opened afresh."""
    stores = open_stores(embedded_urls(tmp_path))
    yield stores[SAGA]
    for store in stores.values():
        await store.close()


async def test_lab9_shows_one_failed_order_as_its_log_has_it_and_stops_serving(
    tmp_path: Path, saga_store: SqlSagaStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(dashboard_timeline.SERVE_ENV, raising=False)
    monkeypatch.delenv(dashboard_timeline.PORT_ENV, raising=False)

    figures = await dashboard_timeline.run(tmp_path, story=False)

    assert figures["problems"] == []
    saga_id = figures["saga_id"]
    assert figures["orders"] == {
        "order-101": "completed",
        "order-102": "completed",
        saga_id: "compensated",
    }
    log = [decode(e) for e in await saga_store.history(saga_id)]
    kinds = [type(e).__name__ for e in log]
    assert kinds[-1] == "SagaCompensated"
    assert figures["failed_step"] == next(e.step for e in log if type(e).__name__ == "StepFailed")
    assert [c["step"] for c in figures["compensations"]] == [
        e.step for e in log if type(e).__name__ == "StepCompensated"
    ]
    assert [s["step"] for s in figures["steps"]] == [
        e.step for e in log if type(e).__name__ in {"StepSucceeded", "StepFailed", "StepSkipped"}
    ]
    assert figures["trace_id"] == tracing.trace_id(log[0].traceparent)
    assert re.fullmatch(r"[0-9a-f]{32}", figures["trace_id"])
    ran = {s["service"] for s in figures["steps"] if s["outcome"] != "skipped"}
    assert ran <= set(figures["trace_services"])
    assert {"order", "payment", "inventory", "shipping"} <= ran
    # The text timeline: forward to the red step, then the compensations going back.
    timeline = figures["timeline"]
    assert timeline[0] == f"Order {saga_id}: compensated"
    assert timeline[1] == f"trace {figures['trace_id']}"
    failed_line = next(line for line in timeline if "FAILED" in line)
    assert failed_line.strip().startswith("[S] schedule_shipment FAILED (")
    back = [line for line in timeline if line.lstrip().startswith("<----")]
    assert len(back) == len(figures["compensations"])
    assert timeline.index(failed_line) < timeline.index(back[0])
    # The deep link: the dashboard, its token, and the order's timeline; gone after the lab.
    url = figures["url"]
    found = re.fullmatch(r"http://127\.0\.0\.1:(\d+)/#/sagas/(.+)&token=([\w-]+)", url)
    assert found is not None and found[2] == saga_id
    async with httpx.AsyncClient(timeout=2) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{found[1]}/api/me")


async def test_lab9_opens_the_dashboard_on_the_failed_orders_timeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    why = missing()
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"lab 9's browser test cannot run: {why}")
        pytest.skip(why)
    from playwright.async_api import async_playwright, expect

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    secret = "lab-viewer-secret-0123456789"
    monkeypatch.setenv("SAGAKIT_TOKENS", f"viewer:learner:{secret}")
    monkeypatch.setenv(dashboard_timeline.SERVE_ENV, "forever")
    monkeypatch.setenv(dashboard_timeline.PORT_ENV, str(port))
    lab = asyncio.create_task(dashboard_timeline.run(tmp_path, story=False))
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        for _ in range(600):  # it serves once its orders have ended
            assert not lab.done(), lab.result()
            try:
                found = await client.get(
                    "/api/sagas?status=compensated", headers={"Authorization": f"Bearer {secret}"}
                )
                break
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    [failed] = found.json()["items"]
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
            page = await browser.new_page(viewport={"width": 1440, "height": 900})
            # The address the lab prints (with tokens it made up itself; these are the
            # configured ones, which it never prints), as the other test reads it.
            await page.goto(f"{base}/#/sagas/{failed['saga_id']}&token={secret}")
            heading = page.get_by_role("heading", name=re.compile(failed["saga_id"]))
            await expect(heading.locator(".status")).to_have_text("compensated")
            tries = page.get_by_role("table", name="Tries, from the saga's start")
            await expect(tries.locator('tr[data-outcome="failed"] td').first).to_have_text(
                re.compile(r"schedule_shipment")
            )
            await expect(tries.locator('tr[data-outcome="compensated"]')).to_have_count(4)
            await expect(page.locator(".role")).to_have_text("viewer")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=ARTIFACTS / "lab9-timeline.png", full_page=True)
            await browser.close()
        assert not lab.done()  # still serving, as asked
    finally:
        lab.cancel()  # what Ctrl-C does to a lab that serves forever
        with contextlib.suppress(asyncio.CancelledError):
            await lab
    async with httpx.AsyncClient(timeout=2) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"{base}/api/me")
