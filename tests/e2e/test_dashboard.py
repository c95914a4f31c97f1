"""The dashboard in a real browser: the system Chromium, headless, against a running shop.

The shop runs embedded in this process with the admin API (serving the dashboard's
build) and the order API on real ports, as ``sagakit demo --serve`` runs them. Orders go
in through the order API; what the page shows is checked against the saga log the shop
wrote. Screenshots of the list and the detail views land in test-artifacts/dashboard/.

Without Chromium, Playwright or the dashboard's build these tests skip outside CI and
fail in it (CI=true): CI installs Chromium and ``make test`` builds the dashboard.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import re
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import uvicorn

from sagakit import tracing
from sagakit.api import AdminConfig, create_admin_app, parse_tokens
from sagakit.api.app import STATIC
from sagakit.errors import UnknownSagaError
from sagakit.log import decode
from sagakit.messages import TransportMessage
from sagakit.ports import Delivery
from sagakit.runtime import Runtime
from sagakit.stores.dead_letters import SqlDeadLetters
from sagakit.transports.memory import MemoryTransport
from shop.api import create_app
from shop.app import SAGA, Shop, embedded_urls, open_stores
from shop.saga import ORDER_SAGA
from shop.world import default_world

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("SAGAKIT_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
OPERATOR = "dashboard-operator-0123456789"
VIEWER = "dashboard-viewer-0123456789"
TOKENS = parse_tokens(f"operator:olga:{OPERATOR}, viewer:victor:{VIEWER}")
ACTION = re.compile(r"^(Retry|Compensate|Resolve|Approve|Reject|Replay)$")
GREEN, RED = "rgb(26, 127, 55)", "rgb(207, 34, 46)"  # --ok and --failed in styles.css
FLAKY = "sagakit.test.flaky"
WAIT_MS = 20_000


def _missing() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "Playwright is not installed (pip install -e '.[dev]')"
    if not CHROMIUM.exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    if not (STATIC / "index.html").exists():
        return "the dashboard is not built (make dashboard)"
    return None


@pytest.fixture(scope="module", autouse=True)
def _browser_and_build() -> None:
    why = _missing()
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the dashboard's browser tests cannot run: {why}")
        pytest.skip(why)


@pytest.fixture(scope="module", autouse=True)
def _trace_ids() -> None:
    # The OpenTelemetry provider is set once per process; without one no trace id exists.
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())


@dataclass
class Flaky:
    """A consumer whose handler is broken until it is fixed: what it cannot handle is
    dead-lettered, and once fixed it takes what an operator replays."""

    fixed: bool = False
    handled: list[str] = field(default_factory=list)

    async def handle(self, deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            if not self.fixed:
                raise RuntimeError("the handler is broken")
            self.handled.append(delivery.message.message_id)


@dataclass
class Served:
    shop: Shop
    transport: MemoryTransport
    dead_letters: SqlDeadLetters
    flaky: Flaky
    admin: str
    orders: str

    async def place(self, customer: str, sku: str, quantity: int = 1) -> str:
        async with httpx.AsyncClient(timeout=10) as client:
            placed = await client.post(
                f"{self.orders}/orders",
                json={"customer_id": customer, "sku": sku, "quantity": quantity},
            )
        assert placed.status_code == 201, placed.text
        order_id: str = placed.json()["order_id"]
        return order_id

    async def log(self, saga_id: str, *, until: str) -> list[Any]:
        """The saga's decoded log, once it holds an event of type ``until``."""
        for _ in range(400):
            with contextlib.suppress(UnknownSagaError):  # not started yet
                events = [decode(e) for e in await self.shop.saga_store.history(saga_id)]
                if any(type(e).__name__ == until for e in events):
                    return events
            await asyncio.sleep(0.05)
        raise AssertionError(f"{saga_id} never reached {until}")

    async def dead_letter(self) -> str:
        """A message the broken handler gives up on: its dead letter's id."""
        await self.transport.declare(FLAKY)
        await asyncio.wait_for(
            self.transport.publish([TransportMessage(FLAKY, "flaky-1", b"{}")]), 10
        )
        for _ in range(200):
            letters = await self.dead_letters.list()
            if letters:
                return letters[0].id
            await asyncio.sleep(0.05)
        raise AssertionError("the message was never dead-lettered")


async def _serve(app: Any) -> tuple[uvicorn.Server, asyncio.Task[None], str]:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[listener]))
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no event to wait on
        await asyncio.sleep(0.01)
    return server, task, f"http://127.0.0.1:{port}"


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    shop = Shop(open_stores(embedded_urls(tmp_path)))
    await shop.setup(default_world(orders=20))
    dead_letters = SqlDeadLetters(shop.stores[SAGA])
    transport = MemoryTransport(
        retry_tiers=(0.05, 0.1), max_deliveries=3, dead_letters=dead_letters
    )
    admin = create_admin_app(
        AdminConfig(
            saga_store=shop.saga_store,
            definitions=[ORDER_SAGA],
            tokens=TOKENS,
            stores=[store for name, store in shop.stores.items() if name != SAGA],
            dead_letters=dead_letters,
            poll=0.1,
        )
    )
    flaky = Flaky()
    try:
        async with Runtime(transport).add(*shop.components()):
            await transport.consume(FLAKY, flaky.handle)
            servers = [await _serve(admin), await _serve(create_app(shop))]
            try:
                yield Served(shop, transport, dead_letters, flaky, servers[0][2], servers[1][2])
            finally:
                for server, _, _ in servers:
                    server.should_exit = True
                await asyncio.gather(*(task for _, task, _ in servers))
    finally:
        await shop.close()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield launched
        finally:
            await launched.close()


async def open_dashboard(browser: Browser, served: Served, token: str, at: str = "") -> Page:
    from playwright.async_api import expect

    page = await browser.new_page(viewport={"width": 1440, "height": 1000})
    refused: list[str] = []  # what the Content Security Policy blocked, if anything
    page.on("console", lambda m: refused.append(m.text) if "Content Security" in m.text else None)
    # The token rides in the fragment (no server sees it), at its end after any route.
    await page.goto(
        f"{served.admin}/{at}&token={token}" if at else f"{served.admin}/#token={token}"
    )
    await expect(page.locator(".feed")).to_have_text("live", timeout=WAIT_MS)
    assert token not in page.url  # the token leaves the address bar once exchanged
    storage = await page.evaluate("JSON.stringify({...sessionStorage, ...localStorage})")
    assert token not in storage and token not in await page.evaluate("document.cookie")
    assert refused == []
    return page


async def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=ARTIFACTS / name, full_page=True)


async def colour(page: Page, selector: str, prop: str = "border-top-color") -> str:
    value: str = await page.locator(selector).first.evaluate(
        f"e => getComputedStyle(e).getPropertyValue('{prop}')"
    )
    return value


def steps_that(events: Sequence[Any], kind: str) -> list[str]:
    return [e.step for e in events if type(e).__name__ == kind]


async def test_a_placed_order_appears_live_and_opens_on_its_timeline(
    served: Served, browser: Browser
) -> None:
    from playwright.async_api import expect

    page = await open_dashboard(browser, served, OPERATOR)
    await page.evaluate("window.sameDocument = true")

    order_id = await served.place("c-ada", "lamp")

    row = page.locator("table.sagas tbody tr").filter(
        has=page.get_by_role("link", name=order_id, exact=True)
    )
    await expect(row).to_have_attribute("data-status", "completed", timeout=WAIT_MS)
    assert await page.evaluate("window.sameDocument") is True  # no reload brought it
    await expect(row.locator(".status")).to_have_text("completed")
    assert await colour(page, "table.sagas .status-completed", "color") == GREEN
    await screenshot(page, "list.png")

    await row.get_by_role("link", name=order_id).click()
    await expect(page.get_by_role("heading", name=re.compile(order_id))).to_be_visible()
    assert page.url.endswith(f"#/sagas/{order_id}")
    events = await served.log(order_id, until="SagaCompleted")
    ran = steps_that(events, "StepSucceeded")
    skipped = steps_that(events, "StepSkipped")  # e.g. no manual approval for a small order
    in_order = list(dict.fromkeys(s for e in events if (s := getattr(e, "step", None))))
    assert set(in_order) == set(ran) | set(skipped)
    lanes = page.get_by_role("list", name="Steps").get_by_role("listitem")
    await expect(lanes.locator(".node:not(.back) .head")).to_have_text(
        [re.compile(rf"\[\w+\] {step}$") for step in in_order]
    )
    forward = lanes.locator(".node:not(.back)")
    outcomes = await forward.evaluate_all("ns => ns.map(n => n.dataset.outcome)")
    assert outcomes == ["ok" if step in ran else "info" for step in in_order]
    await expect(page.locator(".timeline .node.back")).to_have_count(0)
    assert await colour(page, ".timeline .node.ok") == GREEN
    started = events[0]
    await expect(page.locator(".facts code").nth(1)).to_have_text(
        str(tracing.trace_id(started.traceparent))
    )
    log = page.get_by_role("table", name="Saga log")
    await expect(log.locator("tbody tr")).to_have_count(len(events))
    await expect(log.locator("tbody tr").first.locator("td.time")).to_have_text("0ms")
    await screenshot(page, "detail.png")


async def test_a_failing_order_shows_its_red_step_and_the_compensations(
    served: Served, browser: Browser
) -> None:
    from playwright.async_api import expect

    order_id = await served.place("c-penguin", "lamp")  # no carrier serves antarctica
    events = await served.log(order_id, until="SagaCompensated")
    [failed] = steps_that(events, "StepFailed")
    undone = steps_that(events, "StepCompensated")
    assert undone, "the failure came after steps that had to be undone"

    page = await open_dashboard(browser, served, VIEWER, f"#/sagas/{order_id}")
    heading = page.get_by_role("heading", name=re.compile(order_id))
    await expect(heading.locator(".status")).to_have_text("compensated", timeout=WAIT_MS)
    red = page.locator(".timeline .node.failed")
    await expect(red).to_have_count(1)
    await expect(red.locator(".head")).to_have_text(re.compile(rf"{failed}$"))
    await expect(red.locator(".when")).to_contain_text("FAILED")
    assert await colour(page, ".timeline .node.failed") == RED
    back = page.locator(".timeline .node.back:not(.turn)")
    await expect(back.locator(".head")).to_have_text(
        [re.compile(rf"{step}$") for step in reversed(undone)], ignore_case=False
    )
    await expect(back.locator(".when")).to_have_text(
        [re.compile(r"^compensated \(") for _ in undone]
    )
    # Each compensation but the first step's points back at the step before it.
    assert await page.locator(".timeline .arrow.backward").count() >= len(undone) - 1
    log = page.get_by_role("table", name="Saga log")
    await expect(log.locator("tr.outcome-failed")).to_have_count(
        sum(type(e).__name__ == "StepFailed" for e in events)
    )
    await expect(page.locator(".facts .reason")).to_contain_text(failed)
    await screenshot(page, "detail-failed.png")


async def test_a_viewer_sees_no_action_buttons(served: Served, browser: Browser) -> None:
    from playwright.async_api import expect

    letter = await served.dead_letter()
    order_id = await served.place("c-grace", "mug")
    await served.log(order_id, until="SagaCompleted")

    seen = {}
    for token in (OPERATOR, VIEWER):
        page = await open_dashboard(browser, served, token)
        letters = page.locator("section", has=page.get_by_role("heading", name="Dead letters (1)"))
        await expect(letters.get_by_title(letter)).to_be_visible(timeout=WAIT_MS)
        await expect(page.get_by_role("link", name=order_id, exact=True)).to_be_visible()
        seen[token] = await page.get_by_role("button", name=ACTION).count()
        if token == VIEWER:
            await expect(page.locator(".role")).to_have_text("viewer")
            await expect(page.get_by_role("columnheader", name="Actions")).to_have_count(0)
            await screenshot(page, "list-viewer.png")
    assert seen[OPERATOR] >= 1  # the page offers the operator something to do...
    assert seen[VIEWER] == 0  # ...and the viewer nothing


async def test_an_operator_replays_a_dead_letter(served: Served, browser: Browser) -> None:
    from playwright.async_api import expect

    letter = await served.dead_letter()
    served.flaky.fixed = True
    page = await open_dashboard(browser, served, OPERATOR)
    letters = page.locator("section", has=page.get_by_role("heading", name=re.compile("^Dead")))
    await expect(letters.get_by_title(letter)).to_be_visible(timeout=WAIT_MS)

    await letters.get_by_role("button", name="Replay").click()
    await letters.get_by_label(re.compile("Note")).fill("handler fixed")
    await letters.get_by_role("button", name="Confirm replay").click()

    await expect(page.get_by_role("status")).to_contain_text("Replayed 1 dead letter")
    await expect(letters.get_by_role("heading")).to_have_text("Dead letters (0)", timeout=WAIT_MS)
    for _ in range(200):
        if served.flaky.handled:
            break
        await asyncio.sleep(0.05)
    assert served.flaky.handled == ["flaky-1"]  # delivered again, to the fixed handler
    assert await served.dead_letters.depth() == 0


async def test_demo_serve_prints_where_the_tokens_are_but_never_a_secret(
    tmp_path: Path, browser: Browser
) -> None:
    import signal
    import stat
    import sys

    from playwright.async_api import expect

    with socket.socket() as probe, socket.socket() as other:
        probe.bind(("127.0.0.1", 0))
        other.bind(("127.0.0.1", 0))
        port, orders_port = probe.getsockname()[1], other.getsockname()[1]
    output = tmp_path / "demo.out"
    env = {k: v for k, v in os.environ.items() if k != "SAGAKIT_TOKENS"}  # made up per run
    with output.open("wb") as out:
        demo = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "sagakit", "demo", "--serve", "--orders", "3"),
            *("--port", str(orders_port), "--admin-port", str(port)),
            *("--dir", str(tmp_path / "shop")),
            cwd=tmp_path,
            env={**env, "COLUMNS": "200"},
            stdout=out,
            stderr=out,
        )
    try:
        for _ in range(600):
            assert demo.returncode is None, output.read_text()
            if "admin API" in output.read_text():
                break
            await asyncio.sleep(0.05)
        printed = output.read_text()
        assert f"dashboard: http://127.0.0.1:{port}/" in printed, printed
        file = tmp_path / "shop" / "tokens"
        assert f"sign in with a token from {file}" in printed, printed
        assert stat.S_IMODE(file.stat().st_mode) == 0o600
        tokens = dict(line.split(":", 1) for line in file.read_text().split())
        secrets = [t.split(":", 1)[1] for t in tokens.values()]
        assert len(secrets) == 2 and not any(secret in printed for secret in secrets)
        viewer = tokens["viewer"].split(":", 1)[1]
        assert f"viewer demo-viewer ({viewer[:4]}…)" in printed  # told apart by a prefix
        page = await browser.new_page()
        await page.goto(f"http://127.0.0.1:{port}/#token={viewer}")
        await expect(page.locator(".role")).to_have_text("viewer", timeout=WAIT_MS)
        await expect(page.get_by_role("link", name="order-103", exact=True)).to_be_visible()
        assert viewer not in page.url
    finally:
        # Ctrl-C ends it, though the dashboard's stream is still open (the wait fails if not)
        demo.send_signal(signal.SIGINT)
        await asyncio.wait_for(demo.wait(), 30)
