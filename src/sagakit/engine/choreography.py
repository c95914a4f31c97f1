"""Choreography: the same saga definition, run by events instead of a coordinator.

A definition compiles into event routes. Each step's action reacts to the success of
the step before it (the first step to the saga's ``started`` event); each compensatable
step's compensation reacts to the failure or compensation of the step after it. The
participants publish what happened as events, through their outbox, in the same local
transaction as the work, and nobody sends commands.

Routing keys read ``<saga>.started``, ``<saga>.<step>.succeeded``, ``<saga>.<step>.failed``
and ``<saga>.<step>.compensated``.

The :class:`Tracker` listens to every event of its sagas and feeds them through the very
decision code the orchestrator uses (sending nothing), so the saga log and projection
read the same in both flavours and ``sagakit list`` / ``sagakit show`` work unchanged.

What choreography cannot do, by its nature, is said here rather than discovered later:
a parallel group needs someone to join its branches, and an approval someone to take
a person's answer, so a definition with either must run orchestrated; routing rules
need someone to evaluate them, so optional steps never run choreographed; and there
is no coordinator to time a step out, so a step that never answers shows as running
(and its messages, after the transport's delivery limit, as dead letters) until a
person looks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sagakit.clock import SystemClock
from sagakit.engine.batching import HandlerTimedOut
from sagakit.engine.orchestrator import StartRequest
from sagakit.engine.participant import Participant
from sagakit.errors import ConcurrencyError, DefinitionError, PoisonMessageError
from sagakit.model.contracts import check_start
from sagakit.model.decide import decide
from sagakit.model.decision import Decision
from sagakit.model.definition import SagaDefinition, Step, StepKind
from sagakit.model.describe import describe
from sagakit.model.messages import (
    REASON_KEY,
    Envelope,
    MessageKind,
    Op,
    Outgoing,
    ReplyBody,
    event_destination,
    new_id,
)
from sagakit.model.state import SagaState
from sagakit.model.status import StepStatus
from sagakit.model.triggers import Reply, Start
from sagakit.observe import tracing
from sagakit.observe.logs import get_logger
from sagakit.ports import Clock, Delivery, SagaStore, UnitOfWork

log = get_logger("sagakit.choreography")

_OUTCOMES = ("succeeded", "failed", "compensated")


class SagaEventBody(BaseModel):
    """The payload of a choreography event: the saga's data as it now stands."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data: dict[str, Any] = Field(default_factory=dict)
    reason: str | None = None
    key: str | None = None
    version: int = 1
    null_compensation: bool = False


@dataclass(frozen=True, slots=True)
class Route:
    """Run ``step``'s action or compensation when an event with ``trigger`` arrives."""

    trigger: str
    definition: SagaDefinition
    step: Step
    op: Op

    @property
    def command(self) -> str:
        command = self.step.command if self.op == "action" else self.step.compensation
        assert command is not None  # compensation routes exist only for compensatable steps
        return command


def follower_queue(participant: str) -> str:
    """The queue a participant receives its choreography events on."""
    return f"sagakit.choreography.{participant}"


def tracker_queue(name: str = "tracker") -> str:
    return f"sagakit.{name}"


def routing_key(definition: str, step: str | None, outcome: str) -> str:
    return f"{definition}.started" if step is None else f"{definition}.{step}.{outcome}"


def compile_routes(definition: SagaDefinition) -> list[Route]:
    """The event routes that run ``definition`` without a coordinator. Optional steps are
    left out: with no coordinator to evaluate routing rules, they never run."""
    check_choreographable(definition)
    steps = [step for step in definition.steps if not step.optional]
    routes: list[Route] = []
    for index, step in enumerate(steps):
        before = None if index == 0 else steps[index - 1].name
        trigger = routing_key(definition.name, before, "succeeded")
        routes.append(Route(trigger, definition, step, "action"))
        if step.kind is StepKind.COMPENSATABLE and index + 1 < len(steps):
            after = steps[index + 1]
            # A retriable step's failure undoes nothing (the saga needs a person, as
            # orchestrated): only a compensatable step or the pivot failing turns back.
            outcomes = [] if after.kind is StepKind.RETRIABLE else ["failed"]
            if after.kind is StepKind.COMPENSATABLE:
                outcomes.append("compensated")
            routes.extend(
                Route(
                    routing_key(definition.name, after.name, outcome),
                    definition,
                    step,
                    "compensation",
                )
                for outcome in outcomes
            )
    return routes


def check_choreographable(definition: SagaDefinition) -> None:
    where = f"saga {definition.name!r} v{definition.version}"
    if "." in definition.name:
        raise DefinitionError(f"{where}: a choreographed saga's name may not contain '.'")
    for stage in definition.stages:
        if len(stage) > 1:
            names = ", ".join(repr(s.name) for s in stage)
            raise DefinitionError(
                f"{where}: parallel group {names} needs a coordinator to join its branches; "
                "run this saga orchestrated"
            )
        for step in stage:
            if step.kind is StepKind.APPROVAL and not step.optional:
                raise DefinitionError(
                    f"{where}: approval {step.name!r} waits for a person's answer, which only a "
                    "coordinator can take; run this saga orchestrated"
                )


def saga_event(
    definition: SagaDefinition,
    saga_id: str,
    step: str | None,
    outcome: str,
    body: SagaEventBody,
    *,
    now: float,
    causation_id: str | None = None,
    traceparent: str | None = None,
    op: Op | None = None,
) -> Outgoing:
    key = routing_key(definition.name, step, outcome)
    envelope = Envelope(
        message_id=new_id(),
        type=key,
        kind=MessageKind.EVENT,
        saga_id=saga_id,
        causation_id=causation_id,
        created_at=now,
        traceparent=traceparent,
        step=step,
        op=op,
        attempt=1,
        payload=body.model_dump(),
    )
    return Outgoing(event_destination(key), envelope)


class Choreography:
    """A set of definitions run by events: start sagas, and say who reacts to what."""

    def __init__(
        self,
        definitions: Iterable[SagaDefinition],
        *,
        clock: Clock | None = None,
        trackers: Sequence[str] = ("tracker",),
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self.trackers = tuple(trackers)
        self._definitions: dict[str, SagaDefinition] = {}
        self.routes: list[Route] = []
        for definition in definitions:
            if definition.name in self._definitions:
                raise DefinitionError(
                    f"choreography runs one version of {definition.name!r}; routing keys carry "
                    "no version, so two would both react to every event"
                )
            self._definitions[definition.name] = definition
            self.routes.extend(compile_routes(definition))

    @property
    def definitions(self) -> list[SagaDefinition]:
        return list(self._definitions.values())

    def definition(self, name: str) -> SagaDefinition:
        try:
            return self._definitions[name]
        except KeyError:
            raise LookupError(f"no choreographed saga {name!r}") from None

    def routes_for(self, participant: str) -> list[Route]:
        return [r for r in self.routes if r.step.participant == participant]

    @property
    def topology(self) -> dict[str, list[str]]:
        """Every queue these sagas' events go to, with the patterns bound to it: each
        participant's follower queue and each tracker's (``trackers``, the names its
        trackers run under).

        A topic exchange delivers an event to the queues bound *when it is published*:
        one published before a follower's queue existed is lost to that follower, even
        though another queue (the tracker's) took it and the publish was confirmed. So
        every process that takes part declares the whole of it as it starts, before
        anything it runs can publish (``Runtime.start``)."""
        queues: dict[str, set[str]] = {}
        for route in self.routes:
            queues.setdefault(follower_queue(route.step.participant), set()).add(route.trigger)
        for name in self.trackers:
            queues[tracker_queue(name)] = {f"{d}.#" for d in self._definitions}
        return {queue: sorted(patterns) for queue, patterns in sorted(queues.items())}

    async def start_in(
        self,
        unit: UnitOfWork,
        definition: str,
        data: Mapping[str, Any],
        *,
        saga_id: str | None = None,
        key: str | None = None,
    ) -> str:
        """Start a saga inside the caller's own transaction, next to its business write
        (the order row that the saga is about): both commit, or neither."""
        request = StartRequest(definition, data, saga_id=saga_id, key=key)  # refuses bad input
        saga = self.definition(request.definition)
        check_start(saga, request.data)
        saga_id = request.saga_id or new_id()
        body = SagaEventBody(data=dict(request.data), key=key, version=saga.version)
        started = saga_event(
            saga,
            saga_id,
            None,
            "started",
            body,
            now=self.clock.now(),
            traceparent=tracing.current_traceparent(),
        )
        await unit.enqueue([started])
        return saga_id

    async def start(
        self,
        store: SagaStore,
        definition: str,
        data: Mapping[str, Any],
        *,
        saga_id: str | None = None,
        key: str | None = None,
    ) -> str:
        async with store.unit() as unit:
            return await self.start_in(unit, definition, data, saga_id=saga_id, key=key)

    def follow(self, participant: Participant) -> ChoreographedParticipant:
        """The consumer that lets ``participant`` react to its saga events."""
        routes = self.routes_for(participant.name)
        missing = sorted({r.command for r in routes} - set(participant.commands))
        if missing:
            raise DefinitionError(
                f"participant {participant.name!r} has no handler for {', '.join(missing)}, "
                "which its choreographed steps need"
            )
        return ChoreographedParticipant(
            participant, routes, clock=self.clock, topology=self.topology
        )

    def tracker(self, store: SagaStore, *, name: str = "tracker") -> Tracker:
        if name not in self.trackers:
            raise DefinitionError(
                f"tracker {name!r} is not among this choreography's trackers "
                f"({', '.join(self.trackers)}): pass Choreography(..., trackers=[{name!r}]) "
                "in every process, so each declares its queue before publishing"
            )
        return Tracker(store, self.definitions, name=name, clock=self.clock, topology=self.topology)


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
                event, body = _parse_event(delivery)
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


def _parse_event(delivery: Delivery) -> tuple[Envelope, SagaEventBody]:
    event = Envelope.from_bytes(delivery.message.body)
    if event.kind is not MessageKind.EVENT:
        raise PoisonMessageError("unknown_type", f"{event.kind} {event.type!r} is not an event")
    try:
        body = SagaEventBody.model_validate(event.payload)
    except ValueError as exc:
        raise PoisonMessageError("schema", f"saga event payload: {exc}") from exc
    return event, body


class Tracker:
    """Writes the saga log of choreographed sagas, as the orchestrator would have.

    An event that arrives before the one it follows (reordered on the way) is handed
    back to the transport to come again later, so the log is always written in order.
    """

    def __init__(
        self,
        store: SagaStore,
        definitions: Iterable[SagaDefinition],
        *,
        name: str = "tracker",
        clock: Clock | None = None,
        topology: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.store = store
        #: The whole choreography's queues and bindings, declared by the runtime at start.
        self.topology = dict(topology or {})
        self.clock: Clock = clock or SystemClock()
        self.consumer = f"tracker:{name}"
        self.queue = tracker_queue(name)
        self._definitions = {d.name: d for d in definitions}

    @property
    def definitions(self) -> list[SagaDefinition]:
        return list(self._definitions.values())

    @property
    def bindings(self) -> list[str]:
        return [f"{name}.#" for name in sorted(self._definitions)]

    async def handle(self, deliveries: Sequence[Delivery]) -> None:
        events: list[tuple[Delivery, Envelope, SagaEventBody, SagaDefinition]] = []
        for delivery in deliveries:
            try:
                event, body = _parse_event(delivery)
            except PoisonMessageError as exc:
                delivery.reject(exc.reason, exc.detail)
                continue
            definition = self._definitions.get(event.type.split(".", 1)[0])
            if definition is None or not _known(definition, event):
                delivery.reject("unknown_type", f"the tracker knows no event {event.type!r}")
                continue
            events.append((delivery, event, body, definition))
        for _ in range(8):
            for delivery, *_ in events:
                delivery.reset()
            try:
                async with self.store.unit() as unit:
                    decisions = await self._record(unit, events)
            except ConcurrencyError:
                continue
            for decision in decisions:
                for logged in decision.events:
                    log.info(
                        f"{decision.state.key or decision.state.saga_id[:8]}: {describe(logged)}",
                        saga_id=decision.state.saga_id,
                    )
            return
        raise ConcurrencyError("the tracker kept conflicting with another writer")

    async def _record(
        self,
        unit: UnitOfWork,
        events: list[tuple[Delivery, Envelope, SagaEventBody, SagaDefinition]],
    ) -> list[Decision]:
        loaded = await unit.load([event.saga_id for _, event, _, _ in events])
        states: dict[str, SagaState] = dict(loaded.states)
        decisions: dict[str, Decision] = {}
        now = self.clock.now()
        for delivery, event, body, definition in events:
            if event.saga_id in loaded.broken:
                delivery.reject("corrupt_log", str(loaded.broken[event.saga_id]))
                continue
            state = states.get(event.saga_id)
            if _early(state, event):
                delivery.retry(f"{event.type} arrived before the event it follows")
                continue
            if not await unit.claim(self.consumer, [event.message_id]):
                continue  # a redelivery of an event already recorded
            if event.type.endswith(".started"):
                if state is not None:
                    continue
                trigger: Start | Reply = Start(
                    event.saga_id, body.data, body.key, event.traceparent
                )
            else:
                trigger = _reply(event, body)
            decision = decide(definition, state, trigger, now=now, reply_to="", timers=False)
            # The participants react to events on their own: the tracker records what
            # an orchestrator would have decided, and commands nobody.
            decision.commands.clear()
            states[event.saga_id] = decision.state
            previous = decisions.get(event.saga_id)
            if previous is None:
                decisions[event.saga_id] = decision
            else:
                previous.events.extend(decision.events)
                previous.state = decision.state
        await unit.append(list(decisions.values()))
        return list(decisions.values())


def _known(definition: SagaDefinition, event: Envelope) -> bool:
    parts = event.type.split(".")
    if parts == [definition.name, "started"]:
        return True
    return (
        len(parts) == 3
        and parts[2] in _OUTCOMES
        and any(step.name == parts[1] for step in definition.steps)
    )


def _reply(event: Envelope, body: SagaEventBody) -> Reply:
    _, step, outcome = event.type.split(".")
    if outcome == "compensated":
        reply = ReplyBody(ok=True, data={"null_compensation": body.null_compensation})
        return Reply(step, "compensation", 1, event.message_id, reply)
    ok = outcome == "succeeded"
    return Reply(
        step,
        "action",
        1,
        event.message_id,
        ReplyBody(ok=ok, data=body.data if ok else {}, reason=body.reason),
    )


def _early(state: SagaState | None, event: Envelope) -> bool:
    """Whether ``event`` follows one the log has not recorded yet."""
    if event.type.endswith(".started"):
        return False
    if state is None:
        return True
    _, step, outcome = event.type.split(".")
    st = state.steps.get(step)
    status = st.status if st is not None else StepStatus.PENDING
    if outcome == "compensated":
        return status not in {
            StepStatus.COMPENSATING,
            StepStatus.COMPENSATION_WAIT,
            StepStatus.COMPENSATED,
        }
    return status is StepStatus.PENDING
