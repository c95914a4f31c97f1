"""The dashboard in a real browser (the system Chromium, headless) against the real admin
API over a running shop: every figure on screen is checked against the saga store, each
page passes an accessibility audit, keeps a strict content policy, and is photographed
for the docs (docs/dashboard/)."""

from __future__ import annotations

import asyncio
import math
import re
import socket
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from sagakit import StepContext, StepRejected
from sagakit.api.figures import OUTCOMES
from sagakit.model.events import decode
from sagakit.observe import tracing
from sagakit_shop.app import REDACT
from sagakit_shop.services.notification import NotificationService
from tests.e2e.dashboard_kit import (
    ACTION,
    GREEN,
    OPERATOR,
    RED,
    TRACES,
    VIEWER,
    WAIT_MS,
    Served,
    audit,
    chromium,
    colour,
    described,
    open_dashboard,
    policy_kept,
    require_browser,
    screenshot,
    serve_shop,
    trace_ids,
)

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture(scope="module", autouse=True)
def _ready() -> None:
    require_browser()
    trace_ids()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    async with serve_shop(tmp_path) as shop:
        yield shop


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


def steps_that(events: Sequence[Any], kind: str) -> list[str]:
    return [e.step for e in events if type(e).__name__ == kind]


def elapsed(seconds: float) -> str:
    """A time from the saga's start as the dashboard writes it (format.ts, ``elapsed``)."""
    ms = seconds * 1000
    return f"{max(0, math.floor(ms + 0.5))}ms" if ms < 1000 else f"{math.floor(ms / 100) / 10:.1f}s"


def nearest_rank(values: list[float], p: int) -> float:
    return sorted(values)[math.ceil(p / 100 * len(values)) - 1]


async def chart_label(page: Page, title: str) -> str:
    from playwright.async_api import expect

    chart = page.locator(f'[data-chart="{title}"]')
    await expect(chart).to_have_attribute("aria-label", re.compile(rf"^{re.escape(title)}\. "))
    return str(await chart.get_attribute("aria-label"))


OUTCOMES_CHART = "Sagas started, completed, compensated and needing attention per interval"
LATENCY_CHART = "Saga duration and each step's latency in milliseconds, p50, p95 and p99"
BACKLOG_CHART = "Dead-letter depth and outbox lag over time"


async def test_the_overview_charts_show_what_the_store_holds(
    served: Served, browser: Browser
) -> None:
    from playwright.async_api import expect

    good = [await served.place("c-ada", "lamp") for _ in range(3)]
    far = [await served.place("c-penguin", "lamp") for _ in range(2)]  # no carrier there
    ended = await served.ended(*good, *far)
    assert set(ended.values()) == {"completed", "compensated"}
    store = served.shop.saga_store
    page = await open_dashboard(browser, served, OPERATOR, "#/?window=15m")

    # Outcomes: the chart's totals per series are the saga log's.
    label = await chart_label(page, OUTCOMES_CHART)
    names = [name.replace("_", " ") for name in OUTCOMES.values()]
    counts = await store.count_by_status()
    for series, status in [("started", None), ("completed", "completed")]:
        await expect(page.locator(f'[data-chart="{OUTCOMES_CHART}"]')).to_have_attribute(
            "aria-label", re.compile(rf" {series}: ")
        )
        label = await chart_label(page, OUTCOMES_CHART)
        total = sum(described(label, series, names).values())
        assert total == (sum(counts.values()) if status is None else counts[status])
    assert sum(described(label, "compensated", names).values()) == counts["compensated"] == 2

    # Latency: the saga's p50, p95, p99 are the nearest ranks of the logged durations.
    durations = []
    for saga_id in [*good, *far]:
        history = await store.history(saga_id)
        durations.append((history[-1].recorded_at - history[0].recorded_at) * 1000)
    await expect(page.locator(f'[data-chart="{LATENCY_CHART}"]')).to_have_attribute(
        "aria-label", re.compile(r"p99: saga ")
    )
    label = await chart_label(page, LATENCY_CHART)
    for p in (50, 95, 99):
        shown = described(label, f"p{p}", ["p50", "p95", "p99"])["saga"]
        assert shown == pytest.approx(nearest_rank(durations, p), abs=1.0)

    # Failures: one group, its count the store's, its link lists exactly those sagas.
    link = page.locator("#failures-title").locator("..").get_by_role("link")
    await expect(link).to_have_count(1)
    await expect(link).to_have_text(re.compile(r"^2 \S schedule_shipment failed: "))
    await screenshot(page, "overview.png", docs=True)
    await audit(page)
    await link.click()
    await expect(page.locator("table.sagas tbody tr")).to_have_count(2)
    listed = await page.locator("table.sagas tbody tr td:first-child a").all_inner_texts()
    assert sorted(listed) == sorted(far)

    # Backlog: a dead letter shows as the depth now, sampled from the queue.
    await page.go_back()
    await served.dead_letter()
    chart = page.locator(f'[data-chart="{BACKLOG_CHART}"]')
    await expect(chart).to_have_attribute(
        "aria-label", re.compile(r"dead letters now 1,"), timeout=WAIT_MS
    )
    assert await served.dead_letters.depth() == 1
    await policy_kept(page)


async def test_a_failed_orders_timeline_has_the_logs_times_and_its_data(
    served: Served, browser: Browser
) -> None:
    from playwright.async_api import expect

    order_id = await served.place("c-penguin", "lamp")
    events = await served.log(order_id, until="SagaCompensated")
    history = await served.shop.saga_store.history(order_id)
    [failed] = steps_that(events, "StepFailed")
    undone = steps_that(events, "StepCompensated")

    page = await open_dashboard(browser, served, VIEWER, f"#/sagas/{order_id}")
    heading = page.get_by_role("heading", name=re.compile(order_id))
    await expect(heading.locator(".status")).to_have_text("compensated", timeout=WAIT_MS)
    # Each bar: from its request to its answer, at the log's own times.
    requests = [e for e in history if e.type in {"StepRequested", "CompensationRequested"}]
    answers = [e for e in history if e.type in {"StepSucceeded", "StepFailed", "StepCompensated"}]
    rows = page.get_by_role("table", name="Tries, from the saga's start").locator("tbody tr")
    await expect(rows).to_have_count(len(requests))
    starts = await rows.evaluate_all("rs => rs.map(r => Number(r.dataset.start))")
    ends = await rows.evaluate_all("rs => rs.map(r => Number(r.dataset.end))")
    assert starts == [e.recorded_at for e in requests]
    assert ends == [e.recorded_at for e in answers]
    outcomes = await rows.evaluate_all("rs => rs.map(r => r.dataset.outcome)")
    assert outcomes.count("failed") == 1 and outcomes.count("compensated") == len(undone)
    # The chart draws the same bars, each from its request to its answer.
    gantt = await chart_label(page, "The saga's tries on a time axis")
    start = history[0].recorded_at
    for asked, answered in zip(requests, answers, strict=True):
        event = decode(asked)
        op = "action" if asked.type == "StepRequested" else "compensation"
        outcome = {"StepSucceeded": "succeeded", "StepFailed": "failed"}.get(
            answered.type, "compensated"
        )
        span = f"{elapsed(asked.recorded_at - start)} to {elapsed(answered.recorded_at - start)}"
        assert f"{event.step} {op} try {event.attempt} {outcome}, {span}" in gantt
    assert await colour(page, "table.tries .outcome.failed", "color") == RED
    # The failed try is inspected first: what it was sent and what it answered.
    inspected = page.locator("section.inspect")
    await expect(inspected.get_by_role("heading")).to_have_text(f"Data of {failed} action try 1")
    await expect(inspected.get_by_role("figure").first).to_contain_text(f'"{order_id}"')
    reason = next(e.reason for e in events if type(e).__name__ == "StepFailed")
    await expect(inspected.get_by_role("figure").nth(1)).to_contain_text(reason)
    # The shop's personal data is redacted wherever the page shows saga data.
    personal = {events[0].data[name] for name in REDACT}
    await expect(inspected.get_by_role("figure").first).to_contain_text('"***"')
    html = await page.content()
    assert personal and not any(value in html for value in personal)
    # The trace id links to the configured viewer; the pinned rules are named.
    trace = str(tracing.trace_id(events[0].traceparent))
    link = page.get_by_role("link", name=trace)
    await expect(link).to_have_attribute("href", TRACES.replace("{trace_id}", trace))
    await expect(page.locator(".facts")).to_contain_text("Routing rules")
    log = page.get_by_role("table", name="Saga log")
    await expect(log.locator("tbody tr")).to_have_count(len(events))
    await screenshot(page, "saga-failed.png", docs=True)
    await audit(page)
    await policy_kept(page)


async def test_a_completed_orders_timeline_marks_the_pivot_in_the_dark(
    served: Served, browser: Browser
) -> None:
    from playwright.async_api import expect

    order_id = await served.place("c-ada", "lamp")
    events = await served.log(order_id, until="SagaCompleted")
    page = await open_dashboard(browser, served, VIEWER, f"#/sagas/{order_id}", dark=True)
    rows = page.get_by_role("table", name="Tries, from the saga's start").locator("tbody tr")
    await expect(rows).to_have_count(len(steps_that(events, "StepRequested")), timeout=WAIT_MS)
    pivot = rows.filter(has=page.locator(".pivot"))
    await expect(pivot).to_have_count(1)
    await expect(pivot.locator("td").first).to_contain_text("schedule_shipment")
    assert await colour(page, "table.tries .outcome.succeeded", "color") != GREEN  # dark's own
    await screenshot(page, "saga-dark.png", docs=True)
    await audit(page)
    await policy_kept(page)


async def test_search_finds_by_key_and_reason_and_sorts_by_duration(
    served: Served, browser: Browser
) -> None:
    from playwright.async_api import expect

    placed = {await served.place("c-ada", "mug"): "ok" for _ in range(2)}
    far = await served.place("c-penguin", "lamp")
    await served.ended(*placed, far)
    page = await open_dashboard(browser, served, VIEWER, "#/sagas")
    table = page.locator("table.sagas tbody tr")
    await expect(table).to_have_count(3, timeout=WAIT_MS)

    form = page.get_by_role("search", name="Find sagas")
    await form.get_by_label("Business key").fill(far)
    await form.get_by_role("button", name="Search").click()
    await expect(table).to_have_count(1)
    await expect(table.first.get_by_role("link").first).to_have_text(far)

    await form.get_by_label("Business key").fill("")
    await form.get_by_label("Reason contains").fill("DOES NOT SERVE")
    await form.get_by_role("button", name="Search").click()
    await expect(table).to_have_count(1)
    await expect(table.first.get_by_role("link").first).to_have_text(far)
    await expect(table.first.locator(".reason")).to_contain_text("carrier")

    await form.get_by_label("Reason contains").fill("")
    await form.get_by_role("button", name="Search").click()
    await form.get_by_label("Sort by").select_option("duration")
    await expect(page).to_have_url(re.compile(r"sort=duration"))
    rows = await served.shop.saga_store.list_sagas(limit=10)
    longest = sorted(rows, key=lambda r: (-(r.updated_at - r.created_at), r.saga_id))
    await expect(table.locator("td:first-child a")).to_have_text([r.saga_id for r in longest])
    await screenshot(page, "search.png", docs=True)
    await audit(page)
    await policy_kept(page)


def refusing_mail(customer: str) -> Any:
    """A mail service that refuses one customer's mail: the order's notification (a
    retriable step, after the pivot) is refused for good, so the saga needs a person."""
    original = NotificationService.notify

    async def notify(self: NotificationService, ctx: StepContext) -> None:
        if ctx.payload["customer_id"] == customer:
            raise StepRejected(f"mailbox of {customer} is closed")
        await original(self, ctx)

    return notify


async def test_operators_act_on_several_sagas_at_once_and_viewers_see_no_action(
    tmp_path: Path, browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    from playwright.async_api import expect

    monkeypatch.setattr(NotificationService, "notify", refusing_mail("c-grace"))
    async with serve_shop(tmp_path) as served:
        stuck = [await served.place("c-grace", "mug") for _ in range(2)]
        assert set((await served.ended(*stuck)).values()) == {"needs_attention"}
        letter = await served.dead_letter()

        viewer = await open_dashboard(browser, served, VIEWER)
        panel = viewer.locator(
            "section", has=viewer.get_by_role("heading", name="Needs attention (2)")
        )
        await expect(panel.get_by_role("link")).to_have_count(2, timeout=WAIT_MS)
        await expect(viewer.get_by_title(letter)).to_be_visible()
        await expect(viewer.get_by_role("checkbox")).to_have_count(0)
        await expect(viewer.get_by_role("button", name=ACTION)).to_have_count(0)
        await expect(viewer.get_by_role("columnheader", name="Actions")).to_have_count(0)
        await expect(viewer.locator(".role")).to_have_text("viewer")
        await audit(viewer)

        page = await open_dashboard(browser, served, OPERATOR)
        panel = page.locator("section", has=page.get_by_role("heading", name="Needs attention (2)"))
        await panel.get_by_role("checkbox", name="Select every saga that needs attention").check()
        await expect(panel.get_by_text("2 selected")).to_be_visible()
        await screenshot(page, "needs-attention.png", docs=True)
        await audit(page)
        await panel.get_by_role("button", name="Resolve selected").click()
        await panel.get_by_label(re.compile("Note")).fill("mailed them by hand")
        await panel.get_by_role("button", name="Confirm resolve selected").click()
        await expect(page.get_by_role("status")).to_contain_text("Resolve queued for 2 sagas")
        await expect(page.get_by_role("heading", name="Needs attention (0)")).to_be_visible(
            timeout=WAIT_MS
        )
        for saga_id in stuck:  # each saga's log says who did it and why
            said = await served.log(saga_id, until="OperatorIntervened")
            [intervened] = [e for e in said if type(e).__name__ == "OperatorIntervened"]
            assert (intervened.action, intervened.who, intervened.note) == (
                "resolve",
                "olga",
                "mailed them by hand",
            )
        assert set((await served.shop.saga_store.statuses(stuck)).values()) == {"resolved"}
        async with httpx.AsyncClient(base_url=served.admin, timeout=10) as client:
            record = await client.get("/api/audit", headers={"Authorization": f"Bearer {VIEWER}"})
        assert sorted(
            (a["action"], a["target"], a["who"], a["note"]) for a in record.json()["items"]
        ) == [("resolve", saga_id, "olga", "mailed them by hand") for saga_id in sorted(stuck)]
        await policy_kept(page)
        for opened in (viewer, page):  # their streams end before the shop does
            await opened.context.close()


def local_time(at: float) -> str:
    """A moment as the dashboard writes it with its date (format.ts, ``dateTime``)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(math.floor(at)))


async def test_the_audit_page_shows_who_did_what_to_which_saga_and_why(
    tmp_path: Path, browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    from playwright.async_api import expect

    monkeypatch.setattr(NotificationService, "notify", refusing_mail("c-grace"))
    async with serve_shop(tmp_path) as served:
        stuck = await served.place("c-grace", "mug")
        assert await served.ended(stuck) == {stuck: "needs_attention"}
        letter = await served.dead_letter()
        served.flaky.fixed = True
        note = "customer asked <b>twice</b>; mailbox reopened"
        operator = {"Authorization": f"Bearer {OPERATOR}"}
        async with httpx.AsyncClient(base_url=served.admin, headers=operator, timeout=10) as api:
            retried = await api.post(f"/api/sagas/{stuck}/retry", json={"note": note})
            assert retried.status_code == 202, retried.text
            replayed = await api.post(f"/api/dead-letters/{letter}/replay", json={"note": "fixed"})
            assert replayed.status_code == 200, replayed.text
            record = (await api.get("/api/audit")).json()["items"]
        assert [(a["action"], a["target"]) for a in record] == [
            ("replay", letter),
            ("retry", stuck),
        ]

        # A viewer reads the record too: newest first, the saga's target a link to it.
        page = await open_dashboard(browser, served, VIEWER, "#/audit")
        rows = page.get_by_role("table", name="Operator actions, newest first").locator("tbody tr")
        await expect(rows).to_have_count(2, timeout=WAIT_MS)
        newest, oldest = rows.nth(0), rows.nth(1)
        await expect(newest.locator("td")).to_have_text(
            [local_time(record[0]["at"]), "olga", "replay", f"dead letter {letter}", "fixed", "api"]
        )
        await expect(newest.get_by_role("link")).to_have_count(0)  # a dead letter has no page
        await expect(oldest.locator("td")).to_have_text(
            [local_time(record[1]["at"]), "olga", "retry", stuck, note, "api"]
        )
        assert await oldest.locator("td b").count() == 0  # the note's markup shown, not obeyed
        link = oldest.get_by_role("link", name=stuck, exact=True)
        await expect(link).to_have_attribute("href", f"#/sagas/{stuck}")
        await screenshot(page, "audit.png", docs=True)
        await audit(page)

        form = page.get_by_role("search", name="Filter the record")
        await form.get_by_label(re.compile("Target")).fill(stuck)
        await form.get_by_role("button", name="Filter").click()
        await expect(rows).to_have_count(1)
        await expect(rows.first.locator("td").nth(2)).to_have_text("retry")
        await rows.first.get_by_role("link", name=stuck, exact=True).click()
        await expect(page.get_by_role("heading", name=re.compile(stuck))).to_be_visible()
        await policy_kept(page)
        await page.context.close()  # its stream ends before the shop does


async def test_a_definition_is_drawn_with_its_counts(served: Served, browser: Browser) -> None:
    from playwright.async_api import expect

    placed = [await served.place("c-ada", "lamp"), await served.place("c-penguin", "lamp")]
    await served.ended(*placed)
    page = await open_dashboard(browser, served, VIEWER, "#/definitions")
    await page.get_by_role("link", name="order v1").click()
    await expect(page.get_by_role("heading", name="order v1")).to_be_visible()
    counts = await served.shop.saga_store.count_by_definition()
    for status in ("completed", "compensated"):
        tile = page.locator(f".stat.status-{status} dd")
        await expect(tile).to_have_text(str(counts[("order", 1, status)]))
    graph = page.get_by_role("figure", name="The steps of order v1")
    from sagakit_shop.saga import ORDER_SAGA

    await expect(graph.locator(".flow-step")).to_have_count(len(ORDER_SAGA.steps))
    await expect(graph.locator(".flow-step.kind-pivot")).to_have_text(
        re.compile("schedule_shipment")
    )
    await expect(graph.locator(".flow-step.kind-approval.optional")).to_have_count(1)
    undo = [s for s in ORDER_SAGA.steps if s.compensation]
    await expect(graph.locator(".react-flow__edge.undo")).to_have_count(len(undo))
    await screenshot(page, "definition.png", docs=True)
    await audit(page)
    await page.locator(".stat.status-compensated dd a").click()
    await expect(page.locator("table.sagas tbody tr")).to_have_count(
        counts[("order", 1, "compensated")]
    )
    await policy_kept(page)


async def test_a_placed_order_appears_live(served: Served, browser: Browser) -> None:
    from playwright.async_api import expect

    page = await open_dashboard(browser, served, OPERATOR)
    await page.evaluate("window.sameDocument = true")
    order_id = await served.place("c-ada", "lamp")
    row = page.locator("table.sagas tbody tr").filter(
        has=page.get_by_role("link", name=order_id, exact=True)
    )
    await expect(row).to_have_attribute("data-status", "completed", timeout=WAIT_MS)
    assert await page.evaluate("window.sameDocument") is True  # no reload brought it
    assert await colour(page, "table.sagas .status-completed", "color") == GREEN


#: Addresses no view can read as meant (an escape that decodes to nothing), and what each
#: shows instead of a blank page.
CRAFTED = {
    "#/sagas/%E0%A4%A": "Not found (404)",  # the link the review of the edges sent
    "#/definitions/%E0%A4%A/1": "Not found (404)",
    "#/%E0%A4%A": "Nothing here",
}


async def test_a_crafted_link_shows_what_is_wrong_and_never_blanks_the_page(
    served: Served, browser: Browser
) -> None:
    from playwright.async_api import expect

    order_id = await served.place("c-ada", "lamp")
    await served.ended(order_id)
    # Followed as a link, with the token at its end as a printed address has it.
    page = await open_dashboard(browser, served, VIEWER, "#/sagas/%E0%A4%A")
    thrown: list[str] = []
    page.on("pageerror", lambda error: thrown.append(str(error)))
    views = page.get_by_role("navigation", name="Views")
    await expect(page.get_by_role("alert")).to_contain_text("Not found (404)")
    await expect(page.get_by_role("alert")).to_contain_text("%E0%A4%A")  # the id as given
    await expect(views).to_be_visible()
    await audit(page)
    for address, shown in CRAFTED.items():  # and as the page's own address changes
        await page.evaluate(f"location.hash = '{address}'")
        await expect(page.locator("main")).to_contain_text(shown)
        await expect(views).to_be_visible()
    await views.get_by_role("link", name="Sagas").click()
    await expect(page.get_by_role("link", name=order_id, exact=True)).to_be_visible()
    assert thrown == []
    await policy_kept(page)


async def test_the_token_screen_the_definitions_and_a_missing_page_pass_the_audit(
    served: Served, browser: Browser
) -> None:
    from playwright.async_api import expect

    context = await browser.new_context(viewport={"width": 1440, "height": 1000})
    page = await context.new_page()
    await page.goto(f"{served.admin}/")  # no token
    await expect(page.get_by_role("heading", name="Token missing or wrong")).to_be_visible()
    await audit(page)
    await context.close()
    page = await open_dashboard(browser, served, VIEWER, "#/definitions")
    await expect(page.get_by_role("link", name="order v1")).to_be_visible()
    await audit(page)
    await page.evaluate("location.hash = '#/nowhere'")
    await expect(page.get_by_role("heading", name="Nothing here")).to_be_visible()
    await audit(page)
    await policy_kept(page)


async def test_an_operator_replays_a_dead_letter(served: Served, browser: Browser) -> None:
    from playwright.async_api import expect

    letter = await served.dead_letter()
    served.flaky.fixed = True
    page = await open_dashboard(browser, served, OPERATOR)
    letters = page.locator('section[aria-labelledby="dead-letters-title"]')
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
    import os
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
