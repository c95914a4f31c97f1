"""Prometheus metrics: what the orchestrator sees as it decides, and what the stores hold.

Two kinds. Counters and histograms are observed as decisions commit (sagas started
and finished by outcome, step latency from request to answer); they live in the
process that decides, so each orchestrator process exposes its own. Gauges are read
from the databases when scraped (sagas in flight, needing attention, outbox lag,
dead-letter depth, breaker states), so any process with the stores can serve them,
and every scraper sees the same truth.

Each :class:`Metrics` has a registry of its own: nothing is global.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from sagakit.engine.breakers import read_all
from sagakit.model.decision import Decision
from sagakit.model.events import (
    SagaCompensated,
    SagaCompleted,
    SagaNeedsAttention,
    SagaStarted,
    StepCompensated,
    StepFailed,
    StepSucceeded,
)
from sagakit.ports import DeadLetterQueue
from sagakit.stores.sql import SqlSagaStore

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BREAKER = {"closed": 0, "half_open": 1, "open": 2}


class Metrics:
    """sagakit's metrics in one registry (``generate`` renders them for ``/metrics``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.started = Counter("sagakit_sagas_started", "Sagas started", ["definition"], registry=r)
        self.finished = Counter(
            "sagakit_sagas_finished",
            "Sagas that ended, by outcome",
            ["definition", "outcome"],
            registry=r,
        )
        self.step_seconds = Histogram(
            "sagakit_step_seconds",
            "Time from a step's request to its participant's answer",
            ["definition", "step", "op", "outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "sagakit_sagas_in_flight", "Sagas running or compensating", registry=r
        )
        self.by_status = Gauge("sagakit_sagas", "Sagas by status", ["status"], registry=r)
        self.needs_attention = Gauge(
            "sagakit_sagas_needs_attention", "Sagas waiting for a person", registry=r
        )
        self.outbox_lag = Gauge(
            "sagakit_outbox_lag_seconds",
            "Age of the oldest unsent outbox row",
            ["store"],
            registry=r,
        )
        self.outbox_unsent = Gauge(
            "sagakit_outbox_unsent", "Outbox rows not yet sent", ["store"], registry=r
        )
        self.dead_letters = Gauge(
            "sagakit_dead_letters", "Messages in the dead-letter queue", registry=r
        )
        self.breaker_state = Gauge(
            "sagakit_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open",
            ["store", "breaker"],
            registry=r,
        )

    def observe(self, decisions: Iterable[Decision]) -> None:
        """Count what committed decisions did (called after the commit)."""
        for decision in decisions:
            state = decision.state
            name = state.definition
            for event in decision.events:
                if isinstance(event, SagaStarted):
                    self.started.labels(name).inc()
                elif isinstance(event, SagaCompleted | SagaCompensated | SagaNeedsAttention):
                    outcome = {
                        SagaCompleted: "completed",
                        SagaCompensated: "compensated",
                        SagaNeedsAttention: "needs_attention",
                    }[type(event)]
                    self.finished.labels(name, outcome).inc()
                elif isinstance(event, StepSucceeded | StepFailed | StepCompensated):
                    self._latency(decision, event)

    def _latency(
        self, decision: Decision, event: StepSucceeded | StepFailed | StepCompensated
    ) -> None:
        step = decision.state.steps.get(event.step)
        requested = step.requested_at if step is not None else None
        if requested is None:
            return
        op = "compensation" if isinstance(event, StepCompensated) else "action"
        outcome = "failed" if isinstance(event, StepFailed) else "ok"
        seconds = max(0.0, decision.recorded_at - requested)
        self.step_seconds.labels(decision.state.definition, event.step, op, outcome).observe(
            seconds
        )

    async def refresh(
        self,
        saga_store: SqlSagaStore,
        *,
        stores: Sequence[SqlSagaStore] = (),
        dead_letters: DeadLetterQueue | None = None,
        now: float,
    ) -> None:
        """Read the gauges from the databases (call before rendering)."""
        counts = await saga_store.count_by_status()
        self.by_status.clear()
        for status, count in counts.items():
            self.by_status.labels(status).set(count)
        self.in_flight.set(counts.get("running", 0) + counts.get("compensating", 0))
        self.needs_attention.set(counts.get("needs_attention", 0))
        await self.refresh_stores((saga_store, *stores), dead_letters=dead_letters, now=now)

    async def refresh_stores(
        self,
        stores: Sequence[SqlSagaStore],
        *,
        dead_letters: DeadLetterQueue | None = None,
        now: float,
    ) -> None:
        """Read the gauges every store has (outbox, breakers) and the dead letters': all a
        process without an orchestrator can tell."""
        for store in {id(s): s for s in stores}.values():
            self.outbox_lag.labels(store.url_safe).set(await store.outbox_lag(now))
            self.outbox_unsent.labels(store.url_safe).set(await store.unsent_count())
            async with store.unit() as unit:
                for row in await read_all(unit):
                    value = _BREAKER.get(str(row["state"]), 0)
                    self.breaker_state.labels(store.url_safe, str(row["name"])).set(value)
        if dead_letters is not None:
            self.dead_letters.set(await dead_letters.depth())

    def generate(self) -> bytes:
        return generate_latest(self.registry)
