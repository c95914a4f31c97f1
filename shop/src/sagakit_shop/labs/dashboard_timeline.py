"""Lab 9: the tracing dashboard, opened on one order's timeline.

A few orders go through the shop, one of them to a region no carrier serves. The admin
API and the dashboard come up over the shop's databases, and the lab prints the address
that opens the dashboard on the failed order's timeline, with a token made up for the
lab in its fragment (a token from ``SAGAKIT_TOKENS`` is never printed: sign in with it). The
same timeline, read through the same API the dashboard reads, prints as text: each step
with its service and its time from the start, the red one, and the compensations going
back. Every hop of that saga, in every service, is one trace; the lab collects its spans
and shows which services it crossed.

The dashboard stops when the lab ends, unless ``SAGAKIT_LAB_SERVE`` asks it to stay up:
``forever`` (until Ctrl-C) or a number of seconds. It then listens on
``SAGAKIT_LAB_PORT`` (8000 by default), with the shop still running behind it.
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from rich.text import Text

from sagakit import Runtime, outcomes
from sagakit.api import AdminConfig, Token, create_admin_app
from sagakit.api.app import STATIC
from sagakit.api.auth import fresh_tokens, tokens_from
from sagakit.observe import tracing
from sagakit.stores.dead_letters import SqlDeadLetters
from sagakit.transports.memory import MemoryTransport
from sagakit_shop.app import SAGA, Shop
from sagakit_shop.labs.kit import LAB_RETRY_TIERS, Narrator, never_published, open_shop, unsent
from sagakit_shop.saga import ORDER_SAGA
from sagakit_shop.world import default_world

TITLE = "Tracing dashboard"
LESSON = (
    "One saga's path across every service, opened on one order's timeline: which steps "
    "ran, failed or were undone, how long each took, and the one trace that joins them."
)

#: Orders placed in turn: two go through; the last asks for a region no carrier serves.
ORDERS: tuple[tuple[str, str, int], ...] = (
    ("c-ada", "lamp", 1),
    ("c-grace", "mug", 2),
    ("c-penguin", "lamp", 1),
)
SERVE_ENV = "SAGAKIT_LAB_SERVE"
PORT_ENV = "SAGAKIT_LAB_PORT"


async def run(directory: Path, *, story: bool) -> dict[str, Any]:
    say = Narrator(story=story)
    keep_serving = _serve_for(os.environ.get(SERVE_ENV, ""))
    port = int(os.environ.get(PORT_ENV, "8000" if keep_serving else "0"))
    spans = _SpanCollector.install()
    shop = await open_shop(directory, default_world(orders=len(ORDERS)))
    dead_letters = SqlDeadLetters(shop.saga_store)
    transport = MemoryTransport(
        retry_tiers=LAB_RETRY_TIERS, max_deliveries=8, dead_letters=dead_letters
    )
    configured = tokens_from()
    tokens = configured or fresh_tokens()
    token = _reader(tokens)
    try:
        async with Runtime(transport).add(*shop.components()):
            ids = []
            for customer, sku, quantity in ORDERS:
                ids.append((await shop.place(customer, sku, quantity)).order_id)
                say.say(f"placed {ids[-1]}: {quantity} x {sku} for {customer}")
            statuses = await outcomes([shop.saga(i) for i in ids], timeout=30)
            chosen = next((i for i in ids if statuses[i] == "compensated"), ids[-1])
            admin = create_admin_app(_admin_config(shop, dead_letters, tokens))
            async with _Serving(admin, port) as serving:
                url = f"{serving.url}/#/sagas/{quote(chosen)}"
                if not configured:  # made up for this lab: shown, in the fragment only
                    url += f"&token={quote(token.secret)}"
                detail, built = await _read(serving.url, token, chosen)
                say.say(f"the dashboard, on {chosen}'s timeline ({token.role} token):")
                say.show(Text(url))
                if not built:
                    say.warn("the dashboard is not built: run `make dashboard` to see it")
                say.show(Text("\n".join(timeline_text(detail))))
                if keep_serving:
                    until = "Ctrl-C" if keep_serving == math.inf else f"{keep_serving:g}s"
                    say.say(f"serving the dashboard and the shop for {until}")
                    await serving.until_stopped(keep_serving)
                else:
                    say.say(f"the dashboard stops with the lab; {SERVE_ENV}=forever keeps it up")
        left = await unsent(shop)
        history = await shop.saga_store.history(chosen)
    finally:
        await shop.close()
        spans.active = False
    figures = _figures(detail, statuses, url=url, built=built)
    seen = spans.services(figures["trace_id"])
    figures["trace_services"] = seen
    figures["problems"] = [
        *_problems(figures, len(history), seen),
        *never_published(left),
    ]
    return figures


def _serve_for(value: str) -> float:
    """Seconds to keep serving after the lab: ``forever``, a number, or none."""
    if value.strip().lower() in {"forever", "inf"}:
        return math.inf
    try:
        return max(0.0, float(value)) if value.strip() else 0.0
    except ValueError:
        raise ValueError(f"{SERVE_ENV} is 'forever' or seconds, not {value!r}") from None


def _reader(tokens: Sequence[Token]) -> Token:
    """A viewer's token when there is one: reading a timeline needs no more."""
    return next((t for t in tokens if t.role == "viewer"), tokens[0])


def _admin_config(shop: Shop, dead_letters: SqlDeadLetters, tokens: list[Token]) -> AdminConfig:
    return AdminConfig(
        saga_store=shop.saga_store,
        definitions=[ORDER_SAGA],
        tokens=tokens,
        stores=[store for name, store in shop.stores.items() if name != SAGA],
        dead_letters=dead_letters,
    )


async def _read(base: str, token: Token, saga_id: str) -> tuple[dict[str, Any], bool]:
    """The saga's timeline as the dashboard gets it, and whether the dashboard is there."""
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        answer = await client.get(
            f"/api/sagas/{quote(saga_id)}", headers={"Authorization": f"Bearer {token.secret}"}
        )
        answer.raise_for_status()
        page = await client.get("/")
    built = page.status_code == 200 and (STATIC / "index.html").exists()
    detail: dict[str, Any] = answer.json()
    return detail, built


# ------------------------------------------------------------------- the timeline


def _tags(events: Sequence[dict[str, Any]]) -> dict[str, str]:
    """[O]rder, [P]ayment, ...: a short distinct tag per service, as the dashboard has."""
    tags: dict[str, str] = {}
    for event in events:
        name = event["participant"]
        if not name or name in tags:
            continue
        size = 1
        while name[:size].capitalize() in tags.values() and size < len(name):
            size += 1
        tags[name] = name[:size].capitalize()
    return tags


def _elapsed(ms: int) -> str:
    return f"{ms}ms" if ms < 1000 else f"{ms / 1000:.1f}s"


FORWARD = {"StepSucceeded": "succeeded", "StepFailed": "FAILED", "StepTimedOut": "TIMED OUT"}
FORWARD_OTHER = {"StepSkipped": "skipped"}


def timeline_text(detail: dict[str, Any]) -> list[str]:
    """The saga's timeline as lines of text: steps forward, compensations going back."""
    saga, events = detail["saga"], detail["events"]
    tags = _tags(events)

    def node(event: dict[str, Any], what: str) -> str:
        tag = tags.get(event["participant"] or "", "?")
        return f"[{tag}] {event['step']} {what} ({_elapsed(event['elapsed_ms'])})"

    title = f"Order {saga['key'] or saga['saga_id']}: {saga['status']}"
    lines = [title, f"trace {detail['trace_id'] or 'none recorded'}"]
    forward = [e for e in events if e["type"] in FORWARD or e["type"] in FORWARD_OTHER]
    for i, event in enumerate(forward):
        what = FORWARD.get(event["type"]) or FORWARD_OTHER[event["type"]]
        arrow = "" if i == len(forward) - 1 else " ---->"
        lines.append(f"  {node(event, what)}{arrow}")
    back = [e for e in events if e["type"] == "StepCompensated"]
    if back:
        lines.append("     |")
    lines.extend(f"  <---- {node(event, 'compensated')}" for event in back)
    return lines


def _figures(
    detail: dict[str, Any], statuses: Mapping[str, str], *, url: str, built: bool
) -> dict[str, Any]:
    events = detail["events"]
    steps = [
        {
            "step": e["step"],
            "service": e["participant"],
            "outcome": FORWARD.get(e["type"]) or FORWARD_OTHER[e["type"]],
            "at_ms": e["elapsed_ms"],
        }
        for e in events
        if e["type"] in FORWARD or e["type"] in FORWARD_OTHER
    ]
    compensations = [
        {"step": e["step"], "service": e["participant"], "at_ms": e["elapsed_ms"]}
        for e in events
        if e["type"] == "StepCompensated"
    ]
    failed = [s["step"] for s in steps if s["outcome"] in {"FAILED", "TIMED OUT"}]
    return {
        "orders": statuses,
        "saga_id": detail["saga"]["saga_id"],
        "status": detail["saga"]["status"],
        "trace_id": detail["trace_id"],
        "steps": steps,
        "failed_step": failed[0] if failed else None,
        "compensations": compensations,
        "url": url,
        "dashboard_built": built,
        "timeline": timeline_text(detail),
    }


def _problems(figures: dict[str, Any], logged: int, seen: list[str]) -> list[str]:
    problems = []
    if figures["status"] != "compensated":
        problems.append(f"the failing order ended {figures['status']}, not compensated")
    ran = [s["step"] for s in figures["steps"] if s["outcome"] == "succeeded"]
    undone = [s["step"] for s in figures["compensations"]]
    if undone != [step for step in reversed(ran) if ORDER_SAGA.step(step).compensation]:
        problems.append(f"compensations {undone} are not the steps that ran, last first ({ran})")
    if not figures["trace_id"]:
        problems.append("no trace id was recorded (install the SDK: pip install 'sagakit[otel]')")
    services = {s["service"] for s in figures["steps"] if s["outcome"] != "skipped"}
    if figures["trace_id"] and not services <= set(seen):
        problems.append(f"the trace misses services: {sorted(services - set(seen))}")
    if len(figures["timeline"]) < 3 or logged == 0:
        problems.append("the timeline is empty")
    return problems


# ------------------------------------------------------------------- serving


class _Serving:
    """The admin API (and the dashboard it serves) on 127.0.0.1, while in the block."""

    def __init__(self, app: Any, port: int) -> None:
        import uvicorn

        self._listener = socket.create_server(("127.0.0.1", port))
        # a dashboard's open stream must not hold Ctrl-C up: its connection is cut after 2s
        config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    async def __aenter__(self) -> _Serving:
        task = self._task = asyncio.create_task(self._server.serve(sockets=[self._listener]))
        while not self._server.started:  # uvicorn offers no event to wait on
            if task.done():
                await task  # it could not start: say why
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task
        self._listener.close()

    async def until_stopped(self, seconds: float) -> None:
        """Until Ctrl-C (which uvicorn takes to stop the server), or ``seconds`` pass."""
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=None if seconds == math.inf else seconds)


class _SpanCollector:
    """Finished spans, kept while the lab runs, when an OpenTelemetry SDK is at hand."""

    def __init__(self) -> None:
        self.active = True
        self.finished: list[Any] = []

    @classmethod
    def install(cls) -> _SpanCollector:
        collector = cls()
        try:
            from opentelemetry import trace
            from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
        except ImportError:  # the SDK is the 'otel' extra: no trace ids without it
            return collector
        if not isinstance(trace.get_tracer_provider(), TracerProvider):
            tracing.configure(service="shop-lab")  # exports too, if OTEL_* asks for it
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            provider = TracerProvider()
            trace.set_tracer_provider(provider)

        class Keep(SpanProcessor):
            def on_end(self, span: Any) -> None:
                if collector.active:
                    collector.finished.append(span)

        provider.add_span_processor(Keep())
        return collector

    def services(self, trace_id: str | None) -> list[str]:
        """The services whose steps ran inside the trace ``trace_id``."""
        return sorted(
            {
                str(span.attributes["saga.participant"])
                for span in self.finished
                if trace_id
                and f"{span.context.trace_id:032x}" == trace_id
                and span.name == "saga.step"
                and span.attributes
                and "saga.participant" in span.attributes
            }
        )
