"""The shop's order saga runs through a participant written in Node.js.

Inventory is served by tests/foreign/inventory.mjs (written from docs/protocol.md
alone) over the real RabbitMQ, against the inventory's PostgreSQL tables; every other
service, the orchestrator and the relays run here. Every command to inventory is
delivered twice. Then `sagakit verify` must hold, the admin API (the dashboard's) must
show the participant's steps, its spans must sit inside the saga's trace, and every
message of the run must match the AsyncAPI document `sagakit asyncapi` writes.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sagakit import Runtime, outcomes
from sagakit.api import AdminConfig, create_admin_app, parse_tokens
from sagakit.asyncapi import document
from sagakit.model.messages import TransportMessage, command_queue
from sagakit.model.state import SagaState
from sagakit.observe import tracing
from sagakit.ports import BatchHandler, Delivery, PublishResult
from sagakit.stores.sql import SqlSagaStore
from sagakit_shop.app import Shop, open_stores
from sagakit_shop.distributed import database_urls, prepare
from sagakit_shop.saga import ORDER_SAGA
from sagakit_shop.verify import Report, verify
from tests.conftest import AMQP_URL, PG_ADMIN, drop_pg_database, open_rabbit
from tests.foreign.conftest import node_participant, run_node

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.asyncio(loop_scope="module"),
]

INVENTORY = command_queue("inventory")
INVENTORY_TYPES = {"inventory.reserve", "inventory.release"}
VIEWER = "viewer-secret-0123456789ab"
#: (customer, sku, quantity, how its saga ends, how reserve_stock ends)
ORDERS = [
    ("c-ada", "lamp", 1, "completed", "succeeded"),
    ("c-grace", "mug", 2, "completed", "succeeded"),
    ("c-mallory", "mug", 1, "compensated", "compensated"),  # card declined after it
    ("c-penguin", "lamp", 1, "compensated", "compensated"),  # the carrier refuses the pivot
    ("c-barbara", "globe", 1000, "compensated", "failed"),  # the refusal: not enough stock
    ("c-trudy", "chair", 1, "compensated", "compensated"),  # no money
    ("c-edsger", "lamp", 2, "completed", "succeeded"),
]
EXPORTER = InMemorySpanExporter()


class Wire:
    """The run's transport, recording every message it carries and sending each command
    for the Node participant twice (in the same publish, so often in the same bundle)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seen: list[TransportMessage] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def publish(self, messages: Sequence[TransportMessage]) -> PublishResult:
        self.seen.extend(messages)
        again = [m for m in messages if m.destination == INVENTORY]
        result: PublishResult = await self.inner.publish([*messages, *again])
        return result

    async def consume(
        self, queue: str, handler: BatchHandler, *, prefetch: int = 64, concurrency: int = 1
    ) -> Any:
        async def recording(batch: Sequence[Delivery]) -> None:
            # What the Node participant sent (what this process sent, publish saw).
            self.seen.extend(d.message for d in batch if _from_node(d.message))
            await handler(batch)

        return await self.inner.consume(
            queue, recording, prefetch=prefetch, concurrency=concurrency
        )


def _from_node(message: TransportMessage) -> bool:
    return message.headers.get("type", "").startswith("inventory.")


@dataclass
class Run:
    sagas: dict[str, tuple[str, str, SagaState]]  # saga id -> (expected end, reserve's)
    report: Report
    saga_store: SqlSagaStore
    messages: list[TransportMessage]
    node_spans: list[dict[str, Any]]
    node_lines: list[str]
    spans: list[ReadableSpan] = field(default_factory=list)


@pytest.fixture(scope="module", autouse=True)
def provider() -> None:
    # The provider is set once per process: install it, or add to the one there is.
    sdk = trace.get_tracer_provider()
    if not isinstance(sdk, TracerProvider):
        sdk = TracerProvider()
        trace.set_tracer_provider(sdk)
    sdk.add_span_processor(SimpleSpanProcessor(EXPORTER))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def run(node_packages: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Run]:
    EXPORTER.clear()
    base = PG_ADMIN.rsplit("/", 1)[0] + f"/sagakit_foreign_{uuid.uuid4().hex[:8]}"
    rabbit = await open_rabbit(AMQP_URL)  # skips (fails in CI) without a broker
    urls = database_urls(base)
    await prepare(base, orders_hint=20)
    stores = open_stores(urls)
    shop = Shop({name: store for name, store in stores.items() if name != "inventory"})
    spans_file = tmp_path_factory.mktemp("node") / "spans.jsonl"
    env = {
        "AMQP_URL": AMQP_URL,
        "SAGAKIT_PREFIX": rabbit.prefix,
        "DATABASE_URL": urls["inventory"],
        "TRACE_FILE": str(spans_file),
    }
    wire = Wire(rabbit)
    try:
        async with (
            node_participant("inventory.mjs", env) as node,
            Runtime(wire).add(*shop.components()),
        ):
            placed = {}
            for customer, sku, quantity, *ends in ORDERS:
                order = await shop.place(customer, sku, quantity)
                placed[order.order_id] = ends
            await outcomes([shop.saga(i) for i in placed], timeout=60)
        states = {saga_id: await shop.saga_store.get(saga_id) for saga_id in placed}
        yield Run(
            sagas={i: (placed[i][0], placed[i][1], states[i]) for i in placed},
            report=await verify(stores),
            saga_store=shop.saga_store,
            messages=wire.seen,
            node_spans=[json.loads(line) for line in spans_file.read_text().splitlines()],
            node_lines=node.lines,
            spans=list(EXPORTER.get_finished_spans()),
        )
    finally:
        await shop.close()
        await stores["inventory"].close()
        await rabbit.teardown()
        await rabbit.close()
        for url in urls.values():
            await drop_pg_database(url)


async def test_the_saga_runs_through_the_node_participant_and_the_books_hold(run: Run) -> None:
    for saga_id, (end, reserve, state) in run.sagas.items():
        assert (state.status, state.steps["reserve_stock"].status) == (end, reserve), saga_id
    refused = next(s for e, r, s in run.sagas.values() if r == "failed")
    assert refused.steps["reserve_stock"].error == "not enough antique globe in stock for 1000"
    assert run.report.ok, run.report.as_json()
    assert run.report.holds() == {"money": True, "stock": True, "once": True, "terminal": True}


async def test_every_duplicate_got_the_first_answer_again(run: Run) -> None:
    bodies = [json.loads(m.body) for m in run.messages]
    commands = [b for b in bodies if b["kind"] == "command" and b["type"].startswith("inventory.")]
    replies = [b for b in bodies if b["type"].startswith("inventory.") and b["kind"] == "reply"]
    assert len(commands) >= len(run.sagas) + 3  # a reserve each, and three releases
    for sent in commands:
        answers = [r["payload"] for r in replies if r["causation_id"] == sent["message_id"]]
        assert sorted(a["duplicate"] for a in answers) == [False, True], sent["type"]
        first, again = sorted(answers, key=lambda a: a["duplicate"])
        assert again == {**first, "duplicate": True}
    assert sum("(duplicate)" in line for line in run.node_lines) == len(commands)


async def test_the_dashboard_shows_the_node_participants_steps(run: Run) -> None:
    saga_id = next(i for i, (_, reserve, _) in run.sagas.items() if reserve == "compensated")
    config = AdminConfig(
        saga_store=run.saga_store,
        definitions=[ORDER_SAGA],
        tokens=parse_tokens(f"viewer:vera:{VIEWER}"),
    )
    app = create_admin_app(config)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
        got = await client.get(
            f"/api/sagas/{saga_id}", headers={"Authorization": f"Bearer {VIEWER}"}
        )
    assert got.status_code == 200, got.text
    ours = [e for e in got.json()["events"] if e["participant"] == "inventory"]
    assert [e["type"] for e in ours if e["type"] != "ReplyIgnored"] == [
        "StepRequested",
        "StepSucceeded",
        "CompensationRequested",
        "StepCompensated",
    ]
    # The duplicates' second answers: recorded, and ignored.
    assert [e["type"] for e in ours].count("ReplyIgnored") == 2
    assert {e["step"] for e in ours} == {"reserve_stock"}
    assert got.json()["trace_id"] == tracing.trace_id(run.sagas[saga_id][2].traceparent)


async def test_the_node_participants_spans_join_the_sagas_trace(run: Run) -> None:
    bodies = [json.loads(m.body) for m in run.messages]
    for saga_id, (_, reserve, state) in run.sagas.items():
        trace_id = tracing.trace_id(state.traceparent)
        assert trace_id is not None
        node = [s for s in run.node_spans if s["attributes"]["saga.id"] == saga_id]
        expected = {"action"} | ({"compensation"} if reserve == "compensated" else set())
        assert {s["attributes"]["saga.op"] for s in node} == expected
        assert {s["trace_id"] for s in node} == {trace_id}
        # Under the span that sent the command...
        commands = [b for b in bodies if b["kind"] == "command" and b["saga_id"] == saga_id]
        sent = {b["traceparent"].split("-")[2] for b in commands if b["type"] in INVENTORY_TYPES}
        assert {s["parent_id"] for s in node} <= sent
        # ...and over the orchestrator's decision on its answer.
        mine = {int(s["span_id"], 16) for s in node}
        decided = [
            s
            for s in run.spans
            if s.name == "saga.decide" and s.parent is not None and s.parent.span_id in mine
        ]
        assert len(decided) >= len(expected), saga_id
        assert {s.context.trace_id for s in decided} == {int(trace_id, 16)}


async def test_every_message_of_the_run_matches_the_asyncapi_document(
    run: Run, tmp_path: Path
) -> None:
    (tmp_path / "asyncapi.json").write_text(json.dumps(document([ORDER_SAGA])))
    captured = [
        {"type": m.headers["type"], "headers": m.headers, "body": json.loads(m.body)}
        for m in run.messages
    ]
    (tmp_path / "captured.json").write_text(json.dumps(captured))
    kinds = {c["type"] for c in captured}
    assert {"sagakit.start", "inventory.reserve", "inventory.reserve.reply"} <= kinds
    assert {"inventory.release", "inventory.release.reply", "payment.charge.reply"} <= kinds

    code, report = run_node(
        "check-asyncapi.mjs", str(tmp_path / "asyncapi.json"), str(tmp_path / "captured.json")
    )

    assert report["errors"] == []
    assert (report["unknown"], report["invalid"]) == ([], [])
    assert report["checked"] == len(captured)
    assert code == 0
