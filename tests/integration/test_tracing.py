"""Tracing: one saga is one trace, through every hop, timers and operators included."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sagakit.observe import tracing
from sagakit.testing import SagaHarness
from tests.integration.shop import create_effects, order_participants
from tests.sagas import ORDER

EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def provider() -> None:
    # The OpenTelemetry provider is set once per process: this test installs it, or adds
    # its exporter to the one an earlier test installed.
    sdk = trace.get_tracer_provider()
    if not isinstance(sdk, TracerProvider):
        sdk = TracerProvider()
        trace.set_tracer_provider(sdk)
    sdk.add_span_processor(SimpleSpanProcessor(EXPORTER))


async def test_every_hop_of_a_saga_shares_its_trace() -> None:
    EXPORTER.clear()
    harness = SagaHarness([ORDER])
    harness.add(*order_participants(harness.store, flaky={"charge"}))
    async with harness as h:
        await create_effects(h.store)
        with tracing.span("checkout.request", None) as (_, request):
            saga_id = await h.start("order", {"far": True}, saga_id="traced")
        await h.run_until_terminal([saga_id])
        state = await h.state(saga_id)
    spans = EXPORTER.get_finished_spans()
    ours = [s for s in spans if (s.attributes or {}).get("saga.id") == saga_id]
    names = {s.name for s in ours}
    assert {"saga.start", "saga.decide", "saga.step"} <= names
    assert {s.context.trace_id for s in ours} == {int(tracing.trace_id(request), 16)}
    assert tracing.trace_id(state.traceparent) == tracing.trace_id(request)
    steps = {(s.attributes or {}).get("saga.step") for s in ours if s.name == "saga.step"}
    assert {"reserve", "charge", "ship"} <= steps  # ship failed, then the undoing
    ops = {(s.attributes or {}).get("saga.op") for s in ours if s.name == "saga.step"}
    assert ops == {"action", "compensation"}
    # a retry fired by the timer loop, with no message to carry context, joins it too
    timer = [s for s in ours if (s.attributes or {}).get("saga.trigger") == "Tick"]
    assert timer, "the transient charge failure should have been retried by a timer"
    publishes = [s for s in spans if s.name == "outbox.publish"]
    linked = {link.context.trace_id for s in publishes for link in s.links}
    assert int(tracing.trace_id(request), 16) in linked


async def test_json_logs_carry_the_saga_the_step_and_the_trace() -> None:
    import io
    import json

    from sagakit.observe.logs import configure

    lines = io.StringIO()
    configure("json", stream=lines)
    try:
        harness = SagaHarness([ORDER])
        harness.add(*order_participants(harness.store, flaky={"charge"}))
        async with harness as h:
            await create_effects(h.store)
            with tracing.span("checkout.request", None) as (_, request):
                saga_id = await h.start("order", {"far": True}, saga_id="logged")
            await h.run_until_terminal([saga_id])
    finally:
        configure("quiet")
    records = [json.loads(line) for line in lines.getvalue().splitlines()]
    ours = [r for r in records if r.get("saga_id") == saga_id]
    assert ours, records[:5]
    # the orchestrator's story (a failure, the undoing) and a participant's own lines
    by = {(r["logger"], r.get("step")) for r in ours}
    assert {("sagakit.orchestrator", "ship"), ("sagakit.participant.payment", "charge")} <= by
    assert {r.get("trace_id") for r in ours} == {tracing.trace_id(request)}


async def test_starts_that_share_a_transaction_each_join_their_callers_trace() -> None:
    EXPORTER.clear()
    harness = SagaHarness([ORDER])
    harness.add(*order_participants(harness.store))
    async with harness as h:
        await create_effects(h.store)

        async def request(name: str) -> tuple[str | None, str]:
            with tracing.span(name, None) as (_, parent):
                return parent, await h.start("order", {"far": True}, saga_id=name)

        async def untraced() -> str:
            return await h.start("order", {"far": True}, saga_id="untraced")

        traced = await asyncio.gather(request("first"), request("second"))
        alone = asyncio.ensure_future(untraced())
        with tracing.span("third", None) as (_, third):
            made = await h.start("order", {"far": True}, saga_id="third")
        await alone
    starts = {
        (s.attributes or {}).get("saga.id"): s
        for s in EXPORTER.get_finished_spans()
        if s.name == "saga.start"
    }
    for parent, saga_id in [*traced, (third, made)]:
        assert starts[saga_id].context.trace_id == int(tracing.trace_id(parent), 16)
    # a start made with no trace of its own begins one, whoever it shared a commit with
    assert starts["untraced"].context.trace_id != starts["third"].context.trace_id
    assert starts["untraced"].parent is None
