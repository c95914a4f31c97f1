"""Without an OpenTelemetry SDK nothing records spans, yet a saga's trace context still
travels: the messages a hop sends and the sagas it starts carry the context it received.
Each check runs in a fresh interpreter, as no SDK may be installed in it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

PROGRAM = textwrap.dedent(
    """
    from opentelemetry import trace
    from sagakit.observe import tracing

    assert not tracing.recording()
    incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert tracing.current_traceparent() is None
    with tracing.span("saga.step", incoming, {"order.customer": "c-1"}) as (span, hop):
        assert hop == incoming  # what the hop's messages carry
        assert tracing.current_traceparent() == incoming  # a saga started here joins it
        assert not span.is_recording()
        with tracing.span("saga.decide", None) as (_, inner):
            assert inner == incoming
        with tracing.publishing([incoming] * 100) as (_, published):
            assert published == incoming
    assert tracing.current_traceparent() is None  # and it ends with the hop
    try:
        with tracing.span("saga.step", incoming):
            raise ValueError("the handler failed")
    except ValueError:
        pass
    assert tracing.current_traceparent() is None

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    trace.set_tracer_provider(provider)  # an application's own SDK: spans are recorded
    assert tracing.recording()
    with tracing.span("saga.step", incoming, {"order.customer": "c-1"}) as (span, hop):
        assert span.is_recording() and hop != incoming
        assert hop.split("-")[1] == incoming.split("-")[1]  # the same trace
    [finished] = spans.get_finished_spans()
    assert finished.name == "saga.step" and finished.attributes["order.customer"] == "c-1"
    print("ok")
    """
)


def test_the_trace_travels_without_an_sdk_and_spans_are_recorded_with_one() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
