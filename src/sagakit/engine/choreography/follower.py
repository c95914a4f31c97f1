"""A choreographed participant: runs its steps when their trigger events arrive, and
publishes what happened as the next event, in the same transaction as the work."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sagakit.engine.batching import HandlerTimedOut
from sagakit.engine.choreography.events import SagaEventBody, parse_event, saga_event
from sagakit.engine.choreography.topology import Route, follower_queue
from sagakit.engine.participant import Participant
from sagakit.errors import PoisonMessageError
from sagakit.model.messages import REASON_KEY, Envelope, MessageKind, Op, Outgoing
from sagakit.ports import Clock, Delivery, UnitOfWork


class ChoreographedParticipant:
    """Runs a participant's steps when their trigger events arrive, and publishes the
    outcome as the next event, in the same transaction as the work."""

    def __init__(
        self,
        participant: Participant,
        routes: Sequence[Route],
        *,
        clock: Clock,
        topology: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.participant = participant
        #: The whole choreography's queues and bindings, declared by the runtime at start.
        self.topology = dict(topology or {})
        self.concurrency = participant.concurrency
        self.store = participant.store
        self.clock = clock
        self.queue = follower_queue(participant.name)
        self._routes: dict[str, list[Route]] = {}
        for route in routes:
            self._routes.setdefault(route.trigger, []).append(route)
        self.definitions = list({r.definition.name: r.definition for r in routes}.values())

    @property
    def bindings(self) -> list[str]:
        return sorted(self._routes)

    async def handle(self, deliveries: Sequence[Delivery]) -> None:
        work: list[tuple[Delivery, Envelope, SagaEventBody, Route]] = []
        for delivery in deliveries:
            try:
                event, body = parse_event(delivery)
            except PoisonMessageError as exc:
                delivery.reject(exc.reason, exc.detail)
                continue
            routes = self._routes.get(event.type, [])
            if not routes:
                delivery.reject(
                    "unknown_type", f"{self.participant.name} does not react to {event.type!r}"
                )
                continue
            work.extend((delivery, event, body, route) for route in routes)
        if not work:
            return
        while True:  # each round answers one more late handler unrun, so it ends
            try:
                await self._handle_once(work)
                return
            except HandlerTimedOut as late:
                self.participant.note_timeout(late)
                for delivery, *_ in work:
                    delivery.reset()

    async def _handle_once(
        self, work: Sequence[tuple[Delivery, Envelope, SagaEventBody, Route]]
    ) -> None:
        async with self.store.unit() as unit:
            out: list[Outgoing] = []
            for delivery, event, body, route in work:
                outcome = await self._run(unit, delivery, event, body, route)
                if outcome is not None:
                    out.append(outcome)
            await unit.enqueue(out)

    async def _run(
        self,
        unit: UnitOfWork,
        delivery: Delivery,
        event: Envelope,
        body: SagaEventBody,
        route: Route,
    ) -> Outgoing | None:
        command = Envelope(
            message_id=event.message_id,
            type=f"{self.participant.name}.{route.command}",
            kind=MessageKind.COMMAND,
            saga_id=event.saga_id,
            causation_id=event.message_id,
            created_at=self.clock.now(),
            traceparent=event.traceparent,
            step=route.step.name,
            op=route.op,
            attempt=delivery.attempt,
            payload=_command_payload(body, route.op, _saga_reason(event, body)),
        )
        handler = self.participant.handler(route.command)
        with self.participant.step_span(command) as hop:
            result = await self.participant.execute(unit, command, handler)
        if result.duplicate:
            return None  # the first run published its outcome in its own transaction
        if result.deferred:
            # A dependency is down (an open breaker): come back when it may be up,
            # without spending the delivery's tries, as the orchestrator does.
            delivery.defer(result.reason or "deferred", result.retry_after or 0.0)
            return None
        if result.retryable:
            delivery.retry(result.reason or "failed")
            return None
        if route.op == "compensation":
            outcome, data = "compensated", body.data
        elif result.ok:
            outcome, data = "succeeded", {**body.data, **result.data}
        else:
            outcome, data = "failed", body.data
        reply = SagaEventBody(
            data=data,
            # a compensation passes the saga's failure reason down the chain
            reason=_saga_reason(event, body) if route.op == "compensation" else result.reason,
            key=body.key,
            version=route.definition.version,
            null_compensation=bool(result.data.get("null_compensation")),
        )
        return saga_event(
            route.definition,
            event.saga_id,
            route.step.name,
            outcome,
            reply,
            now=self.clock.now(),
            causation_id=event.message_id,
            traceparent=hop or event.traceparent,
            op=route.op,
        )


def _saga_reason(trigger: Envelope, body: SagaEventBody) -> str | None:
    """Why the saga is being undone, worded as the orchestrator words it: a ``failed``
    event carries the step's own reason, a ``compensated`` one the saga's already."""
    if trigger.type.endswith(".failed") and body.reason is not None:
        return f"{trigger.step} failed: {body.reason}"
    return body.reason


def _command_payload(body: SagaEventBody, op: Op, reason: str | None) -> dict[str, Any]:
    payload = dict(body.data)
    if op == "compensation" and reason:
        payload[REASON_KEY] = reason
    return payload
