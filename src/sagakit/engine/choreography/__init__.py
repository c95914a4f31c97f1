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

The parts: :mod:`~sagakit.engine.choreography.topology` (routes, routing keys, queues),
:mod:`~sagakit.engine.choreography.events` (the events' payload), and the two consumers,
:mod:`~sagakit.engine.choreography.follower` and :mod:`~sagakit.engine.choreography.tracker`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sagakit.clock import SystemClock
from sagakit.engine.choreography.events import SagaEventBody, saga_event
from sagakit.engine.choreography.follower import ChoreographedParticipant
from sagakit.engine.choreography.topology import (
    Route,
    check_choreographable,
    compile_routes,
    follower_queue,
    routing_key,
    tracker_queue,
)
from sagakit.engine.choreography.tracker import Tracker
from sagakit.engine.choreography.tracker import log as log
from sagakit.engine.orchestrator import StartRequest
from sagakit.engine.participant import Participant
from sagakit.errors import DefinitionError
from sagakit.model.contracts import check_start
from sagakit.model.definition import SagaDefinition
from sagakit.model.messages import new_id
from sagakit.observe import tracing
from sagakit.ports import Clock, SagaStore, UnitOfWork

__all__ = [
    "ChoreographedParticipant",
    "Choreography",
    "Route",
    "SagaEventBody",
    "Tracker",
    "check_choreographable",
    "compile_routes",
    "follower_queue",
    "routing_key",
    "saga_event",
    "tracker_queue",
]


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
