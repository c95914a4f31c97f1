"""Tracing: one order is one trace, across every service process.

Every hop of a saga opens a span whose parent is the W3C trace context the incoming
message carried, and every message it sends carries the new span's context on. The
saga's first context is kept in its log, so hops no message leads to (a timer, an
operator's action) join the same trace. Spans: ``saga.start``, ``saga.decide`` (a
decision, with the events it recorded), ``saga.step`` (a participant running an
action or a compensation) and ``outbox.publish`` (a relay batch, linked to the traces
of the messages in it).

The library uses only the OpenTelemetry API, which does nothing until an application
installs an SDK. Entry points call :func:`configure`, which does so when the standard
``OTEL_*`` variables ask for OTLP export, or when ``SAGAKIT_TRACE_FILE`` names a file
to write finished spans to as JSON lines (handy in tests and on a laptop).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from sagakit.observe.redaction import redact_attributes

_PROPAGATOR = TraceContextTextMapPropagator()
_tracer = trace.get_tracer("sagakit")
#: The API's providers before an SDK is installed: their spans are never recorded.
_SILENT_PROVIDERS = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)


def _context(traceparent: str | None) -> Any:
    return _PROPAGATOR.extract({"traceparent": traceparent}) if traceparent else None


def recording() -> bool:
    """Whether spans go anywhere: an OpenTelemetry SDK (ours from :func:`configure`, or
    the application's own) is installed as the tracer provider."""
    return not isinstance(trace.get_tracer_provider(), _SILENT_PROVIDERS)


def current_traceparent() -> str | None:
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


@contextmanager
def span(
    name: str,
    parent: str | None,
    attributes: Mapping[str, Any] | None = None,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    links: Sequence[str | None] = (),
) -> Iterator[tuple[Span, str | None]]:
    """A span under ``parent``; yields it and the traceparent messages sent inside it
    should carry (the parent's own when no tracer is installed)."""
    if not recording():
        # Nothing records spans: keep only what carries the trace on, the parent's context
        # as the current one (for the messages sent and the sagas started inside), as the
        # API's no-op tracer would, without the span, the attributes (redacted for
        # nobody) or the links (a context extracted for each).
        if parent is None:
            yield trace.get_current_span(), current_traceparent()
            return
        token = otel_context.attach(_context(parent))
        try:
            yield trace.get_current_span(), parent
        finally:
            otel_context.detach(token)
        return
    linked = [Link(trace.get_current_span(_context(tp)).get_span_context()) for tp in links if tp]
    with _tracer.start_as_current_span(
        name,
        context=_context(parent),
        kind=kind,
        attributes={k: v for k, v in redact_attributes(attributes or {}).items() if v is not None},
        links=linked,
    ) as current:
        yield current, current_traceparent() or parent


#: Traces a publish span links to, at most (a batch may carry hundreds of sagas).
PUBLISH_LINKS = 64


def publishing(
    traceparents: Sequence[str | None],
) -> AbstractContextManager[tuple[Span, str | None]]:
    """The span of one publish of outbox messages (by the relay or by a publisher on
    commit), linked to the traces of the first messages it carries."""
    return span(
        "outbox.publish",
        None,
        {"messaging.batch.message_count": len(traceparents)},
        kind=SpanKind.PRODUCER,
        links=traceparents[:PUBLISH_LINKS],
    )


def trace_id(traceparent: str | None) -> str | None:
    """The trace id in a W3C traceparent (``00-<trace>-<span>-<flags>``)."""
    if not traceparent or traceparent.count("-") != 3:
        return None
    return traceparent.split("-")[1]


def configure(env: Mapping[str, str] = os.environ, *, service: str = "sagakit") -> bool:
    """Install the OpenTelemetry SDK if the environment asks for export; say whether it
    did. Safe to call once per process at its entry point."""
    wants_otlp = bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or env.get("OTEL_TRACES_EXPORTER", "none") not in ("", "none")
    )
    trace_file = env.get("SAGAKIT_TRACE_FILE")
    if not wants_otlp and not trace_file:
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    name = env.get("OTEL_SERVICE_NAME", service)
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    if wants_otlp:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if trace_file:
        path = Path(trace_file.replace("{pid}", str(os.getpid())))
        provider.add_span_processor(SimpleSpanProcessor(json_lines_exporter(path, name)))
    trace.set_tracer_provider(provider)
    global _tracer  # noqa: PLW0603 - the API's tracer, re-fetched once a provider exists
    _tracer = trace.get_tracer("sagakit")
    return True


def json_lines_exporter(path: Path, service: str) -> Any:
    """A span exporter writing finished spans as JSON lines: trace and span ids, parent,
    name, the process's service name and pid, and attributes. (Built here, not at
    import, because the SDK is only present where tracing is configured.)"""
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    path.parent.mkdir(parents=True, exist_ok=True)

    class JsonLinesExporter(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            with path.open("a") as out:
                for finished in spans:
                    context = finished.get_span_context()
                    parent = finished.parent
                    record = {
                        "trace_id": f"{context.trace_id:032x}",
                        "span_id": f"{context.span_id:016x}",
                        "parent_id": f"{parent.span_id:016x}" if parent else None,
                        "name": finished.name,
                        "service": service,
                        "pid": os.getpid(),
                        "attributes": dict(finished.attributes or {}),
                    }
                    out.write(json.dumps(record) + "\n")
            return SpanExportResult.SUCCESS

    return JsonLinesExporter()
