"""The orchestrator: consumes replies and timers, decides, and records each decision.

Every batch is one local transaction: inbox rows for the replies, the sagas locked
and loaded, their new events, projection rows, snapshots and outgoing commands. Two
orchestrators on one PostgreSQL never decide the same reply twice: the inbox row and
the saga row lock make the second one wait and then find the reply already decided.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import warnings
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sagakit.clock import SystemClock
from sagakit.engine.groupcommit import GroupCommit
from sagakit.engine.handle import SagaHandle
from sagakit.errors import ConcurrencyError, PoisonMessageError, StoreError
from sagakit.model.contracts import ContractError, broken_reply, check_start
from sagakit.model.data import check_json_object, check_key, check_saga_id
from sagakit.model.decide import decide
from sagakit.model.decision import Decision, merge_decisions
from sagakit.model.definition import SagaDefinition
from sagakit.model.describe import describe, outcome
from sagakit.model.events import (
    CompensationFailed,
    OperatorIntervened,
    ReplyIgnored,
    SagaCompleted,
    SagaEvent,
    StepFailed,
)
from sagakit.model.messages import Envelope, MessageKind, Outgoing, new_id, reply_queue
from sagakit.model.state import SagaState
from sagakit.model.status import SagaStatus
from sagakit.model.triggers import Intervene, Reply, Signal, Start, Tick, Trigger
from sagakit.observe.logs import get_logger
from sagakit.ports import Clock, Delivery, Loaded, SagaStore, UnitOfWork

if TYPE_CHECKING:
    from sagakit.observe.metrics import Metrics
from sagakit.engine.liveness import Heartbeat
from sagakit.engine.rules import RuleBook, RuleSet
from sagakit.observe import tracing

log = get_logger("sagakit.orchestrator")
_story = logging.getLogger("sagakit.orchestrator")

_MAX_CONFLICT_RETRIES = 8


@dataclass(frozen=True, slots=True)
class StartRequest:
    """One saga to start; ``saga_id`` makes starting idempotent when the caller picks it.

    ``definition`` is a definition's name, or the SagaDefinition itself (its version
    then, unless ``version`` says otherwise). The data must be a dict of JSON values
    (:mod:`sagakit.model.data`); anything else is refused here, with where and why."""

    definition: str
    data: Mapping[str, Any]
    saga_id: str | None = None
    key: str | None = None
    version: int | None = None
    traceparent: str | None = None

    def __post_init__(self) -> None:
        name, version = definition_named(self.definition, self.version)
        object.__setattr__(self, "definition", name)
        object.__setattr__(self, "version", version)
        check_saga_id(self.saga_id)
        check_key(self.key)
        object.__setattr__(self, "data", check_json_object(self.data, "the saga's start data"))


def definition_named(definition: object, version: int | None) -> tuple[str, int | None]:
    """The name and version a saga is started by, given a definition's name or the
    SagaDefinition itself (its own version unless ``version`` says otherwise)."""
    if isinstance(definition, SagaDefinition):
        return definition.name, definition.version if version is None else version
    if not isinstance(definition, str):
        raise TypeError(
            "a saga is started by its definition's name or its SagaDefinition, "
            f"not {type(definition).__name__}"
        )
    return definition, version


class Orchestrator:
    """Runs saga definitions against a store. Many may share one PostgreSQL store."""

    def __init__(
        self,
        store: SagaStore,
        definitions: Iterable[SagaDefinition],
        *,
        group: str = "orchestrator",
        clock: Clock | None = None,
        rules: bool = True,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        # Routing rules published in the store; each saga is pinned to the version
        # current when it starts.
        self.rulebook = RuleBook() if rules else None
        self.group = group
        self.heartbeat = Heartbeat(group)
        # Without a clock of its own, decisions take the time from the store's
        # transaction: the database's clock on PostgreSQL.
        self._own_clock = clock
        self.clock: Clock = clock or SystemClock()
        self.reply_queue = reply_queue(group)
        self.consumer = f"orchestrator:{group}"
        self._definitions: dict[tuple[str, int], SagaDefinition] = {}
        self._latest: dict[str, SagaDefinition] = {}
        self._starts: GroupCommit[StartRequest, str] = GroupCommit(
            self._start_together, shared=_unreachable
        )
        self._start_path: Callable[[StartRequest], Awaitable[str]] = self._starts.submit
        for definition in definitions:
            self.register(definition)

    @property
    def queue(self) -> str:
        return self.reply_queue

    @property
    def bindings(self) -> tuple[str, ...]:
        return ()

    def register(self, definition: SagaDefinition) -> None:
        """Add a definition; sagas already running keep the version they started with."""
        self._definitions[(definition.name, definition.version)] = definition
        latest = self._latest.get(definition.name)
        if latest is None or latest.version < definition.version:
            self._latest[definition.name] = definition

    @property
    def definitions(self) -> list[SagaDefinition]:
        return list(self._definitions.values())

    @property
    def participants(self) -> set[str]:
        return {step.participant for d in self._definitions.values() for step in d.steps}

    def definition(self, name: str, version: int | None = None) -> SagaDefinition:
        found = (
            self._latest.get(name) if version is None else self._definitions.get((name, version))
        )
        if found is None:
            known = ", ".join(sorted(d.key for d in self._definitions.values())) or "none"
            wanted = name if version is None else f"{name}@v{version}"
            raise LookupError(f"no saga definition {wanted!r} (known: {known})")
        return found

    # ------------------------------------------------------------------ starting

    async def start(
        self,
        definition: str | SagaDefinition,
        data: Mapping[str, Any],
        *,
        saga_id: str | None = None,
        key: str | None = None,
        version: int | None = None,
    ) -> SagaHandle:
        """Start one saga; once its start is committed, return its handle (its id, with
        ``outcome()`` to wait for its end). Starting an id that
        exists does nothing. Starts made at the same time share one transaction (see
        :mod:`sagakit.engine.groupcommit`); an unknown definition fails here, alone, and so does
        data that is not a dict of JSON values (DataError, naming the key) or that breaks
        a step's contract (:class:`~sagakit.model.contracts.ContractError`)."""
        name, version = definition_named(definition, version)
        request = StartRequest(
            name,
            data,
            saga_id=check_saga_id(saga_id) or new_id(),
            key=key,
            version=version,
            traceparent=tracing.current_traceparent(),  # the caller's trace, not the flush's
        )
        check_start(self.definition(request.definition, request.version), request.data)
        return SagaHandle(await self._start_path(request), self.store)

    def hand_starts_to(self, starter: Callable[[StartRequest], Awaitable[str]] | None) -> None:
        """Have ``starter`` run this orchestrator's starts from now on: a runtime that
        runs the first step in the start's own transaction (``Runtime.fuse``). None
        gives them back to the orchestrator's own shared start transactions."""
        self._start_path = starter or self._starts.submit

    async def outcomes(
        self, saga_ids: Iterable[str], *, timeout: float = 30.0
    ) -> dict[str, SagaStatus]:
        """Deprecated: ``await sagakit.outcomes(handles)``, the batch form of
        ``handle.outcome()``, waits for many sagas in any store."""
        warnings.warn(
            "Orchestrator.outcomes is deprecated: use await sagakit.outcomes(handles)",
            DeprecationWarning,
            stacklevel=2,
        )
        ended = await self.store.wait_ended(list(saga_ids), timeout=timeout)
        return {saga_id: SagaStatus(status) for saga_id, status in ended.items()}

    async def start_many(self, requests: Sequence[StartRequest]) -> list[SagaHandle]:
        """Start many sagas at once (their first commands go out together); return their
        handles once their starts are committed."""
        if self._start_path != self._starts.submit:
            ids = await asyncio.gather(*(self._start_path(r) for r in requests))
        else:
            ids = await self._start_together(requests)
        return [SagaHandle(saga_id, self.store) for saga_id in ids]

    async def _start_together(self, requests: Sequence[StartRequest]) -> list[str]:
        """Start many sagas in one transaction."""
        planned = [
            (self.definition(r.definition, r.version), r, r.saga_id or new_id()) for r in requests
        ]
        ids = [saga_id for _, _, saga_id in planned]
        for _ in range(_MAX_CONFLICT_RETRIES):
            try:
                async with self.store.unit() as unit:
                    existing = await unit.load(ids)
                    now = await self._now(unit)
                    decisions: dict[str, Decision] = {}
                    for definition, request, saga_id in planned:
                        if saga_id in existing.states or saga_id in existing.broken:
                            continue
                        if saga_id in decisions:
                            continue
                        trigger = Start(
                            saga_id, dict(request.data), request.key, request.traceparent
                        )
                        rules = await self._current_rules(unit, definition.name)
                        decisions[saga_id] = await self._decide(
                            definition,
                            None,
                            trigger,
                            now=now,
                            traceparent=request.traceparent,
                            rules=rules,
                        )
                    await unit.append(list(decisions.values()))
                self._tell(decisions.values())
                return ids
            except ConcurrencyError:
                continue
        raise ConcurrencyError(f"could not start {len(ids)} saga(s): kept conflicting")

    # ------------------------------------------------------------------ replies

    def start_message(
        self,
        definition: str,
        data: Mapping[str, Any],
        *,
        saga_id: str,
        key: str | None = None,
        version: int | None = None,
        traceparent: str | None = None,
    ) -> Outgoing:
        """A message that starts a saga when this orchestrator receives it (see
        :func:`start_message`)."""
        return start_message(
            self.definition(definition, version),
            data,
            saga_id=saga_id,
            key=key,
            group=self.group,
            now=self.clock.now(),
            traceparent=traceparent,
        )

    async def handle(self, deliveries: Sequence[Delivery]) -> None:
        """Consume a batch of replies (and start messages): one transaction, one
        decision per saga."""
        batch: list[tuple[Delivery, Envelope]] = []
        for delivery in deliveries:
            try:
                envelope = Envelope.from_bytes(delivery.message.body)
                _check_incoming(envelope)
            except PoisonMessageError as exc:
                delivery.reject(exc.reason, exc.detail)
                continue
            batch.append((delivery, envelope))
        if batch:
            await self._retrying(lambda unit: self._decide_replies(unit, batch))

    async def _decide_replies(
        self, unit: UnitOfWork, replies: list[tuple[Delivery, Envelope]]
    ) -> list[Decision]:
        fresh, loaded = await unit.claim_and_load(
            self.consumer, [(env.message_id, env.saga_id) for _, env in replies]
        )
        now = await self._now(unit)
        decisions: dict[str, Decision] = {}
        seen: set[str] = set()
        for delivery, env in replies:
            if env.message_id not in fresh or env.message_id in seen:
                log.debug("duplicate reply ignored", saga_id=env.saga_id, step=env.step)
                continue
            seen.add(env.message_id)
            if env.type == START_TYPE:
                started = await self._start_from(
                    unit, delivery, env, loaded=loaded, decisions=decisions, now=now
                )
                if started is not None:
                    decisions[env.saga_id] = started
                continue
            trigger = _trigger(env)
            state = decisions[env.saga_id].state if env.saga_id in decisions else None
            state = state or loaded.states.get(env.saga_id)
            if state is None:
                broken = loaded.broken.get(env.saga_id)
                if broken is not None:
                    log.error(str(broken), saga_id=env.saga_id)
                    delivery.reject("corrupt_log", str(broken))
                else:
                    delivery.reject("unknown_saga", f"no saga {env.saga_id!r} in this store")
                continue
            try:
                definition = self.definition(state.definition, state.definition_version)
            except LookupError as exc:
                delivery.reject("unknown_definition", str(exc))
                continue
            breach = broken_reply(definition, env) if isinstance(trigger, Reply) else None
            if breach is not None and isinstance(trigger, Reply):
                delivery.reject("contract", breach)  # kept for a person; the step fails now
                trigger = replace(trigger, broken=breach)
            rules = await self._pinned_rules(unit, state)
            decision = await self._decide(
                definition, state, trigger, now=now, traceparent=env.traceparent, rules=rules
            )
            decisions[env.saga_id] = merge_decisions(decisions.get(env.saga_id), decision)
        await unit.append(list(decisions.values()))
        return list(decisions.values())

    async def _start_from(
        self,
        unit: UnitOfWork,
        delivery: Delivery,
        env: Envelope,
        *,
        loaded: Loaded,
        decisions: dict[str, Decision],
        now: float,
    ) -> Decision | None:
        body = StartBody.model_validate(env.payload)
        if env.saga_id in loaded.states or env.saga_id in loaded.broken or env.saga_id in decisions:
            return None  # already started: starting is idempotent
        try:
            definition = self.definition(body.definition, body.version)
            check_start(definition, body.data)
        except LookupError as exc:
            delivery.reject("unknown_definition", str(exc))
            return None
        except ContractError as exc:
            delivery.reject("contract", exc.reason)
            return None
        trigger = Start(env.saga_id, body.data, body.key, env.traceparent)
        rules = await self._current_rules(unit, definition.name)
        return await self._decide(definition, None, trigger, now=now, rules=rules)

    # ------------------------------------------------------------------ timers

    async def tick(self, *, limit: int = 256, held: Collection[str] = ()) -> int:
        """Fire due retries and deadlines for up to ``limit`` sagas; return how many moved.

        Sagas in ``held`` are left alone this time: a runtime that runs their steps in
        this process (``Runtime.fuse``) holds them queued or running, bounded by each
        handler's own timeout, so a deadline that passed while a step waited its turn
        in memory does not give up on a try that has not begun."""
        decided = await self._retrying(lambda unit: self._decide_due(unit, limit, held))
        return sum(1 for decision in decided if decision.events)

    async def _decide_due(
        self, unit: UnitOfWork, limit: int, held: Collection[str] = ()
    ) -> list[Decision]:
        now = await self._now(unit)
        await self.heartbeat.beat(unit.records.heartbeats)  # sagakit.engine.liveness
        ids = await unit.due(now, limit + len(held))
        if held:
            ids = [saga_id for saga_id in ids if saga_id not in held][:limit]
        if not ids:
            return []
        loaded = await unit.load(ids)
        for saga_id, broken in loaded.broken.items():
            log.error(f"cannot fire timers: {broken}", saga_id=saga_id)
        if loaded.broken:
            await unit.quarantine({sid: str(err) for sid, err in loaded.broken.items()})
        decisions = []
        for state in loaded.states.values():
            try:
                definition = self.definition(state.definition, state.definition_version)
            except LookupError:
                continue  # another orchestrator group owns this definition
            rules = await self._pinned_rules(unit, state)
            decisions.append(await self._decide(definition, state, Tick(), now=now, rules=rules))
        await unit.append(decisions)
        return decisions

    # ------------------------------------------------------------------ plumbing

    async def decide_in(
        self,
        unit: UnitOfWork,
        definition: SagaDefinition,
        state: SagaState | None,
        trigger: Trigger,
        *,
        now: float,
        traceparent: str | None = None,
    ) -> Decision:
        """Decide ``trigger`` for the saga in ``state`` (None for a :class:`Start`), which
        runs ``definition``, inside ``unit``, as this orchestrator decides its own: with
        the routing rules the saga is pinned to (a start: the current ones). Nothing is
        appended: the caller appends the decision with the rest of its transaction, then
        calls :meth:`committed`. For a runtime that runs steps inside the orchestrator's
        transactions (``Runtime.fuse``)."""
        if state is None:
            rules = await self._current_rules(unit, definition.name)
        else:
            rules = await self._pinned_rules(unit, state)
        return await self._decide(
            definition, state, trigger, now=now, traceparent=traceparent, rules=rules
        )

    async def now_in(self, unit: UnitOfWork) -> float:
        """The time decisions in ``unit`` are made at: this orchestrator's clock, or the
        transaction's (the database's, on PostgreSQL)."""
        return await self._now(unit)

    def committed(self, decisions: Iterable[Decision]) -> None:
        """Decisions made with :meth:`decide_in` have committed: count them and tell
        their story, as for the orchestrator's own."""
        self._tell(decisions)

    async def _now(self, unit: UnitOfWork) -> float:
        return self._own_clock.now() if self._own_clock is not None else await unit.now()

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

    async def _retrying(self, work: Any) -> list[Decision]:
        for attempt in range(1, _MAX_CONFLICT_RETRIES + 1):
            try:
                async with self.store.unit() as unit:
                    decisions: list[Decision] = await work(unit)
            except ConcurrencyError:
                log.debug(f"conflict on attempt {attempt}; deciding the batch again")
                continue
            except StoreError as exc:
                if not exc.retryable or attempt == _MAX_CONFLICT_RETRIES:
                    raise
                continue
            self._tell(decisions)
            return decisions
        raise ConcurrencyError("a batch kept conflicting with another orchestrator")

    def _tell(self, decisions: Iterable[Decision]) -> None:
        """After a commit: count it, and tell its story."""
        if self.metrics is not None:
            decisions = list(decisions)
            self.metrics.observe(decisions)
        if not _story.isEnabledFor(logging.INFO):
            return  # nothing below info is worth the formatting on a busy path
        for decision in decisions:
            for event in decision.events:
                _log_event(decision.state, event)


#: The type of a message that starts a saga (see Orchestrator.start_message).
START_TYPE = "sagakit.start"
#: The type of a message carrying an operator's retry, compensate or resolve.
OPERATOR_TYPE = "sagakit.operator"
#: The type of a message carrying a person's answer to a pending approval.
SIGNAL_TYPE = "sagakit.signal"


class SignalBody(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    decision: Literal["approve", "reject"]
    who: str = Field(min_length=1, max_length=200)
    note: str = Field(default="", max_length=2000)


def signal_message(
    saga_id: str,
    decision: Literal["approve", "reject"],
    *,
    who: str,
    note: str = "",
    group: str = "orchestrator",
) -> Outgoing:
    """A person's approve or reject for a saga waiting on an approval step."""
    body = SignalBody(decision=decision, who=who, note=note)
    envelope = Envelope(
        message_id=new_id(),
        type=SIGNAL_TYPE,
        kind=MessageKind.COMMAND,
        saga_id=saga_id,
        created_at=time.time(),
        payload=body.model_dump(),
    )
    return Outgoing(reply_queue(group), envelope)


def _trigger(envelope: Envelope) -> Reply | Intervene | Signal:
    if envelope.type == OPERATOR_TYPE:
        return _intervention(envelope)
    if envelope.type == SIGNAL_TYPE:
        body = SignalBody.model_validate(envelope.payload)
        return Signal(decision=body.decision, who=body.who, note=body.note)
    return Reply.of(envelope)


class OperatorBody(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    action: Literal["retry", "compensate", "resolve"]
    who: str = Field(min_length=1, max_length=200)
    note: str = Field(default="", max_length=2000)


def operator_message(
    saga_id: str,
    action: Literal["retry", "compensate", "resolve"],
    *,
    who: str,
    note: str = "",
    group: str = "orchestrator",
) -> Outgoing:
    """A person's retry, compensate or resolve for one saga, addressed to its
    orchestrator. Enqueue it in the saga store's outbox and the relay delivers it; the
    orchestrator decides it like any other message and records who asked and why."""
    body = OperatorBody(action=action, who=who, note=note)
    envelope = Envelope(
        message_id=new_id(),
        type=OPERATOR_TYPE,
        kind=MessageKind.COMMAND,
        saga_id=saga_id,
        created_at=time.time(),
        payload=body.model_dump(),
    )
    return Outgoing(reply_queue(group), envelope)


def _intervention(envelope: Envelope) -> Intervene:
    body = OperatorBody.model_validate(envelope.payload)
    return Intervene(action=body.action, who=body.who, note=body.note)


class StartBody(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    definition: str
    version: int
    data: dict[str, Any]
    key: str | None = None


def start_message(
    definition: SagaDefinition,
    data: Mapping[str, Any],
    *,
    saga_id: str,
    key: str | None = None,
    group: str = "orchestrator",
    now: float | None = None,
    traceparent: str | None = None,
) -> Outgoing:
    """A message that starts a saga when orchestrator ``group`` receives it.

    Enqueue it in your own transaction (``unit.enqueue([...])``) next to the business
    write the saga is about, and the two commit together: an order row and the saga
    that processes it. Starting is idempotent on ``saga_id``. Any service can build it;
    it needs the definition, not a running orchestrator. Data that breaks a step's
    contract raises :class:`~sagakit.model.contracts.ContractError` here.
    """
    request = StartRequest(definition.name, data, saga_id=saga_id, key=key)  # refuses bad input
    check_start(definition, request.data)
    body = StartBody(
        definition=definition.name, version=definition.version, data=dict(request.data), key=key
    )
    envelope = Envelope(
        message_id=new_id(),
        type=START_TYPE,
        kind=MessageKind.COMMAND,
        saga_id=saga_id,
        created_at=time.time() if now is None else now,
        traceparent=traceparent,
        payload=body.model_dump(),
    )
    return Outgoing(reply_queue(group), envelope)


def _check_incoming(envelope: Envelope) -> None:
    """Refuse, as poison, anything that is not a well-formed reply, start or operator
    action."""
    if envelope.kind is MessageKind.COMMAND and envelope.type in _BODIES:
        try:
            _BODIES[envelope.type].model_validate(envelope.payload)
        except ValueError as exc:
            raise PoisonMessageError("schema", f"{envelope.type} payload: {exc}") from exc
        return
    if envelope.kind is not MessageKind.REPLY or not envelope.step or not envelope.op:
        raise PoisonMessageError(
            "unknown_type", f"{envelope.kind} {envelope.type!r} is not a reply"
        )
    try:
        Reply.of(envelope)
    except ValueError as exc:
        raise PoisonMessageError("schema", f"reply payload: {exc}") from exc


_BODIES: dict[str, type[BaseModel]] = {
    START_TYPE: StartBody,
    OPERATOR_TYPE: OperatorBody,
    SIGNAL_TYPE: SignalBody,
}


def _unreachable(exc: Exception) -> bool:
    """A start's failure that is its transaction's, not its own: the store is down or
    the connection broke (every start that shared it gets the error at once)."""
    return isinstance(exc, StoreError) and exc.retryable


def _log_event(state: SagaState, event: SagaEvent) -> None:
    # Routine progress is debug; what a reader of the story needs (failures, undoing,
    # the end) is info or louder.
    kind = outcome(event)
    if kind == "failed":
        level = logging.WARNING
    elif kind == "undo" or isinstance(
        event, SagaCompleted | StepFailed | CompensationFailed | ReplyIgnored | OperatorIntervened
    ):
        level = logging.INFO
    else:
        level = logging.DEBUG
    if not _story.isEnabledFor(level):
        return
    log.log(
        level,
        f"{state.key or state.definition + ' ' + state.saga_id[:8]}: {describe(event)}",
        saga_id=state.saga_id,
        step=getattr(event, "step", None),
        event_type=event.event_type,
        trace_id=tracing.trace_id(state.traceparent),
    )
