"""The tracker: writes the saga log of choreographed sagas from their events, through the
very decision code the orchestrator uses (sending nothing), so the log and projection
read the same in both flavours and ``sagakit list`` / ``sagakit show`` work unchanged."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from sagakit.clock import SystemClock
from sagakit.engine.choreography.events import SagaEventBody, parse_event
from sagakit.engine.choreography.topology import tracker_queue
from sagakit.errors import ConcurrencyError, PoisonMessageError
from sagakit.model.decide import decide
from sagakit.model.decision import Decision
from sagakit.model.definition import SagaDefinition
from sagakit.model.describe import describe
from sagakit.model.messages import Envelope, ReplyBody
from sagakit.model.state import SagaState
from sagakit.model.status import StepStatus
from sagakit.model.triggers import Reply, Start
from sagakit.observe.logs import get_logger
from sagakit.ports import Clock, Delivery, SagaStore, UnitOfWork

log = get_logger("sagakit.choreography")

_OUTCOMES = ("succeeded", "failed", "compensated")


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
                event, body = parse_event(delivery)
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
