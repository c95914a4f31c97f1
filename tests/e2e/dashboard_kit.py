"""What the dashboard's browser tests share: a shop served with its admin API, the system
Chromium, a strict content policy on every page, an accessibility audit with axe-core,
and screenshots for the docs.

The shop runs embedded in the test's process with the admin API (serving the dashboard's
build) and the order API on real ports, as ``sagakit demo --serve`` runs them. Without
Chromium, Playwright, the build or axe-core the tests skip outside CI and fail in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
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

from sagakit.api import AdminConfig, create_admin_app, parse_tokens
from sagakit.api.app import STATIC
from sagakit.engine.runtime import Runtime
from sagakit.errors import UnknownSagaError
from sagakit.model.events import decode
from sagakit.model.messages import TransportMessage
from sagakit.observe.redaction import Redaction
from sagakit.ports import Delivery
from sagakit.stores.dead_letters import SqlDeadLetters
from sagakit.transports.memory import MemoryTransport
from sagakit_shop.api import create_app
from sagakit_shop.app import REDACT, SAGA, Shop, embedded_urls, open_stores
from sagakit_shop.saga import ORDER_SAGA
from sagakit_shop.world import default_world

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("SAGAKIT_CHROMIUM", "/usr/bin/chromium"))
AXE = ROOT / "dashboard" / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
#: The screenshots docs/dashboard.md shows: written again by a run of these tests with
#: SAGAKIT_DOCS_SHOTS=1 (a plain run leaves the committed ones as they are).
DOCS_SHOTS = ROOT / "docs" / "dashboard"
RETAKE_DOCS_SHOTS = os.environ.get("SAGAKIT_DOCS_SHOTS") == "1"
OPERATOR = "dashboard-operator-0123456789"
VIEWER = "dashboard-viewer-0123456789"
TOKENS = parse_tokens(f"operator:olga:{OPERATOR}, viewer:victor:{VIEWER}")
TRACES = "http://traces.example:16686/trace/{trace_id}"
ACTION = re.compile(r"^(Retry|Compensate|Resolve|Approve|Reject|Replay)( selected)?$")
GREEN, RED = "rgb(26, 127, 55)", "rgb(207, 34, 46)"  # --ok and --failed in styles.css
FLAKY = "sagakit.test.flaky"
WAIT_MS = 20_000
#: What every page's Content Security Policy must say, at least: scripts and styles from
#: the admin API's own files only (no inline ones), and no framing.
STRICT = {"script-src": ["'self'"], "style-src": ["'self'"], "frame-ancestors": ["'none'"]}


def missing() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "Playwright is not installed (pip install -e '.[dev]')"
    if not CHROMIUM.exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    if not (STATIC / "index.html").exists():
        return "the dashboard is not built (make dashboard)"
    if not AXE.exists():
        return "axe-core is not installed (cd dashboard && npm ci)"
    return None


def require_browser() -> None:
    why = missing()
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the dashboard's browser tests cannot run: {why}")
        pytest.skip(why)


def trace_ids() -> None:
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

    async def ended(self, *saga_ids: str) -> dict[str, str]:
        """Each saga's status once all have ended."""
        for _ in range(400):
            found = await self.shop.saga_store.statuses(list(saga_ids))
            if len(found) == len(saga_ids) and all(
                s not in {"running", "compensating"} for s in found.values()
            ):
                return found
            await asyncio.sleep(0.05)
        raise AssertionError(f"{saga_ids} did not all end")

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
    # a page's open stream must not hold the shutdown up: its connection is cut after 2s
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    task = asyncio.create_task(server.serve(sockets=[listener]))
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no event to wait on
        await asyncio.sleep(0.01)
    return server, task, f"http://127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def serve_shop(tmp_path: Path) -> AsyncIterator[Served]:
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
            trace_url=TRACES,
            sample_every=0.5,
            redaction=Redaction(REDACT),  # what `sagakit demo --serve` hides
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


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield launched
        finally:
            await launched.close()


# Every page records what the content policy refused, for `policy_kept` to look at.
_WATCH_POLICY = """
window.__refused = [];
document.addEventListener("securitypolicyviolation", (e) =>
  window.__refused.push(`${e.violatedDirective}: ${e.blockedURI || e.sample}`));
"""


async def open_dashboard(
    browser: Browser, served: Served, token: str, at: str = "", *, dark: bool = False
) -> Page:
    """The dashboard at ``at`` (a hash route) as the admin API serves it, with its own
    security headers, once its live feed is up on the session the token was exchanged
    for, and the token has left the address bar without being kept anywhere."""
    from playwright.async_api import expect

    context = await browser.new_context(
        viewport={"width": 1440, "height": 1000}, color_scheme="dark" if dark else "light"
    )
    await context.add_init_script(_WATCH_POLICY)
    page = await context.new_page()
    # The token rides in the fragment (no server sees it), at its end after any route.
    answer = await page.goto(
        f"{served.admin}/{at}&token={token}" if at else f"{served.admin}/#token={token}"
    )
    assert answer is not None
    strict_headers(answer.headers)
    await expect(page.locator(".feed")).to_have_text("live", timeout=WAIT_MS)
    assert token not in page.url  # the token leaves the address bar once exchanged
    storage = await page.evaluate("JSON.stringify({...sessionStorage, ...localStorage})")
    assert token not in storage and token not in await page.evaluate("document.cookie")
    return page


def strict_headers(headers: dict[str, str]) -> None:
    """The page came with a strict content policy, no framing, sniffing or referrer."""
    policy = {
        name: values
        for name, *values in (d.split() for d in headers["content-security-policy"].split(";"))
    }
    assert {name: policy.get(name) for name in STRICT} == STRICT, policy
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"


async def policy_kept(page: Page) -> None:
    """Nothing the page did was refused by the strict content policy (no inline script
    or style in the build, none added at run time)."""
    refused = await page.evaluate("window.__refused")
    assert refused == [], refused


async def audit(page: Page) -> None:
    """axe-core finds no serious or critical accessibility violation on the page as it is."""
    if not await page.evaluate("typeof window.axe !== 'undefined'"):
        # evaluated, not a <script>: the page's own content policy need not allow it
        await page.evaluate(AXE.read_text())
    found = await page.evaluate(
        "axe.run(document, {resultTypes: ['violations']}).then(r => r.violations)"
    )
    grave = [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in found
        if v["impact"] in {"serious", "critical"}
    ]
    assert grave == [], json.dumps(grave, indent=1)


async def screenshot(page: Page, name: str, *, docs: bool = False) -> None:
    """Into test-artifacts/, and for ``docs``, when asked (SAGAKIT_DOCS_SHOTS=1), into
    docs/dashboard/ too (committed)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=ARTIFACTS / name, full_page=True)
    if docs and RETAKE_DOCS_SHOTS:
        DOCS_SHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=DOCS_SHOTS / name, full_page=True)


async def colour(page: Page, selector: str, prop: str = "border-top-color") -> str:
    value: str = await page.locator(selector).first.evaluate(
        f"e => getComputedStyle(e).getPropertyValue('{prop}')"
    )
    return value


def described(label: str, series: str, names: Sequence[str]) -> dict[str, float]:
    """One series of a chart's description ("<series>: <name> <value>; ..."), as values
    by item name; ``names`` are every series' names, so one's end is the next's start."""
    start = label.index(f" {series}: ") + len(series) + 3
    ends = [label.find(f". {other}: ", start) for other in names if other != series]
    end = min([e for e in ends if e > 0], default=len(label) - 1)
    items = label[start:end].rstrip(".").split("; ")
    found = {}
    for item in items:
        name, _, value = item.rpartition(" ")
        found[name] = float(value)
    return found
