"""Deciding one trigger for one saga, as an orchestrator does it.

At the orchestrator's time (its own clock, or the transaction's: the database's on
PostgreSQL), with the routing rules the saga is pinned to (a start: the current ones),
inside a trace span, and off the event loop when a rule's condition may make it wait.
"""

from __future__ import annotations

import asyncio
import functools

from sagakit.engine.rules import RuleBook, RuleSet
from sagakit.model.decide import decide
from sagakit.model.decision import Decision
from sagakit.model.definition import SagaDefinition
from sagakit.model.state import SagaState
from sagakit.model.triggers import Start, Trigger
from sagakit.observe import tracing
from sagakit.ports import Clock, UnitOfWork


class Decider:
    """Decides triggers for one orchestrator, whose replies come back to ``reply_queue``.

    ``clock`` None takes the time from each unit's transaction; ``rulebook`` None
    decides without routing rules."""

    def __init__(self, *, reply_queue: str, clock: Clock | None, rulebook: RuleBook | None) -> None:
        self.reply_queue = reply_queue
        self.clock = clock
        self.rulebook = rulebook

    async def now(self, unit: UnitOfWork) -> float:
        """The time decisions in ``unit`` are made at."""
        return self.clock.now() if self.clock is not None else await unit.now()

    async def decide(
        self,
        unit: UnitOfWork,
        definition: SagaDefinition,
        state: SagaState | None,
        trigger: Trigger,
        *,
        now: float,
        traceparent: str | None = None,
    ) -> Decision:
        """Decide ``trigger`` for the saga in ``state`` (None for a :class:`Start`) with the
        routing rules read in ``unit``. Nothing is appended."""
        if state is None:
            rules = await self._current_rules(unit, definition.name)
        else:
            rules = await self._pinned_rules(unit, state)
        return await self._decide(
            definition, state, trigger, now=now, traceparent=traceparent, rules=rules
        )

    async def _current_rules(self, unit: UnitOfWork, saga: str) -> RuleSet | None:
        if self.rulebook is None:
            return None
        records = unit.records.rules
        version = await self.rulebook.latest(records, saga)
        return None if version is None else await self.rulebook.get(records, saga, version)

    async def _pinned_rules(self, unit: UnitOfWork, state: SagaState) -> RuleSet | None:
        if self.rulebook is None or state.rules_version is None:
            return None
        return await self.rulebook.get(unit.records.rules, state.definition, state.rules_version)

    async def _decide(
        self,
        definition: SagaDefinition,
        state: SagaState | None,
        trigger: Trigger,
        *,
        now: float,
        traceparent: str | None = None,
        rules: RuleSet | None = None,
    ) -> Decision:
        saga_id = (
            trigger.saga_id if isinstance(trigger, Start) else state.saga_id if state else None
        )
        name = "saga.start" if isinstance(trigger, Start) else "saga.decide"
        parent = traceparent or (state.traceparent if state else None)
        attributes = {
            "saga.id": saga_id,
            "saga.definition": definition.name,
            "saga.trigger": type(trigger).__name__,
            "saga.step": getattr(trigger, "step", None),
        }
        with tracing.span(name, parent, attributes) as (span, hop):
            call = functools.partial(
                decide,
                definition,
                state,
                trigger,
                now=now,
                reply_to=self.reply_queue,
                traceparent=hop,
                rules=rules,
            )
            # A routing rule's condition is evaluated in the rule worker, a wait of up to
            # its budget (sagakit.engine.rule_budget); in a thread, that wait never holds up this
            # event loop, and so no other saga, health check or stop.
            decision = await asyncio.to_thread(call) if rules and rules.rules else call()
            if span.is_recording():
                span.set_attribute("saga.events", [e.event_type for e in decision.events])
                span.set_attribute("saga.status", decision.state.status.value)
        return decision
