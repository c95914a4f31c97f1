"""The orchestrator: consumes replies and timers, decides, and records each decision.

Every batch is one local transaction: inbox rows for the replies, the sagas locked
and loaded, their new events, projection rows, snapshots and outgoing commands. Two
orchestrators on one PostgreSQL never decide the same reply twice: the inbox row and
the saga row lock make the second one wait and then find the reply already decided.

Its parts, each a module beside this one: the start path (:mod:`~sagakit.engine.starting`),
deciding one trigger (:mod:`~sagakit.engine.deciding`), a batch from its queue
(:mod:`~sagakit.engine.replies`), its timers (:mod:`~sagakit.engine.timers`), the messages
its queue carries (:mod:`~sagakit.engine.orchestrator_messages`) and the story its
decisions tell (:mod:`~sagakit.engine.story`).
"""

from __future__ import annotations

import warnings
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sagakit.clock import SystemClock
from sagakit.engine.deciding import Decider
from sagakit.engine.handle import SagaHandle, outcomes
from sagakit.engine.liveness import Heartbeat
from sagakit.engine.orchestrator_messages import (
    OPERATOR_TYPE,
    SIGNAL_TYPE,
    START_TYPE,
    OperatorBody,
    SignalBody,
    StartBody,
    check_incoming,
    operator_message,
    signal_message,
    start_message,
)
from sagakit.engine.replies import decide_replies
from sagakit.engine.rules import RuleBook
from sagakit.engine.starting import MAX_CONFLICT_RETRIES, Starter, StartRequest, definition_named
from sagakit.engine.story import tell
from sagakit.engine.timers import decide_due
from sagakit.errors import ConcurrencyError, PoisonMessageError, StoreError
from sagakit.model.contracts import check_start
from sagakit.model.data import check_saga_id
from sagakit.model.decision import Decision
from sagakit.model.definition import SagaDefinition
from sagakit.model.messages import Envelope, Outgoing, new_id, reply_queue
from sagakit.model.state import SagaState
from sagakit.model.status import SagaStatus
from sagakit.model.triggers import Trigger
from sagakit.observe import tracing
from sagakit.observe.logs import get_logger
from sagakit.ports import Clock, Delivery, SagaStore, UnitOfWork

if TYPE_CHECKING:
    from sagakit.observe.metrics import Metrics

__all__ = [
    "OPERATOR_TYPE",
    "SIGNAL_TYPE",
    "START_TYPE",
    "OperatorBody",
    "Orchestrator",
    "SignalBody",
    "StartBody",
    "StartRequest",
    "definition_named",
    "operator_message",
    "signal_message",
    "start_message",
]

log = get_logger("sagakit.orchestrator")


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
        self.group = group
        self.heartbeat = Heartbeat(group)
        self.clock: Clock = clock or SystemClock()
        self.reply_queue = reply_queue(group)
        self.consumer = f"orchestrator:{group}"
        # Routing rules published in the store; each saga is pinned to the version
        # current when it starts. Without a clock of its own, decisions take the time
        # from the store's transaction: the database's clock on PostgreSQL.
        self._decider = Decider(
            reply_queue=self.reply_queue, clock=clock, rulebook=RuleBook() if rules else None
        )
        self._definitions: dict[tuple[str, int], SagaDefinition] = {}
        self._latest: dict[str, SagaDefinition] = {}
        self._starts = Starter(self)
        for definition in definitions:
            self.register(definition)

    @property
    def queue(self) -> str:
        return self.reply_queue

    @property
    def bindings(self) -> tuple[str, ...]:
        return ()

    @property
    def rulebook(self) -> RuleBook | None:
        """The routing rules published in the store (None when made with ``rules=False``)."""
        return self._decider.rulebook

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
        return SagaHandle(await self._starts.start(request), self.store)

    def hand_starts_to(self, starter: Callable[[StartRequest], Awaitable[str]] | None) -> None:
        """Have ``starter`` run this orchestrator's starts from now on: a runtime that
        runs the first step in the start's own transaction (``Runtime.fuse``). None
        gives them back to the orchestrator's own shared start transactions."""
        self._starts.hand_to(starter)

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
        return await outcomes([SagaHandle(i, self.store) for i in saga_ids], timeout=timeout)

    async def start_many(self, requests: Sequence[StartRequest]) -> list[SagaHandle]:
        """Start many sagas at once (their first commands go out together); return their
        handles once their starts are committed."""
        ids = await self._starts.start_many(requests)
        return [SagaHandle(saga_id, self.store) for saga_id in ids]

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

    # ------------------------------------------------------------------ replies

    async def handle(self, deliveries: Sequence[Delivery]) -> None:
        """Consume a batch of replies (and start messages): one transaction, one
        decision per saga."""
        batch: list[tuple[Delivery, Envelope]] = []
        for delivery in deliveries:
            try:
                envelope = Envelope.from_bytes(delivery.message.body)
                check_incoming(envelope)
            except PoisonMessageError as exc:
                delivery.reject(exc.reason, exc.detail)
                continue
            batch.append((delivery, envelope))
        if batch:
            await self._retrying(lambda unit: decide_replies(self, unit, batch))

    # ------------------------------------------------------------------ timers

    async def tick(self, *, limit: int = 256, held: Collection[str] = ()) -> int:
        """Fire due retries and deadlines for up to ``limit`` sagas; return how many moved.

        Sagas in ``held`` are left alone this time: a runtime that runs their steps in
        this process (``Runtime.fuse``) holds them queued or running, bounded by each
        handler's own timeout, so a deadline that passed while a step waited its turn
        in memory does not give up on a try that has not begun."""
        decided = await self._retrying(lambda unit: decide_due(self, unit, limit, held))
        return sum(1 for decision in decided if decision.events)

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
        return await self._decider.decide(
            unit, definition, state, trigger, now=now, traceparent=traceparent
        )

    async def now_in(self, unit: UnitOfWork) -> float:
        """The time decisions in ``unit`` are made at: this orchestrator's clock, or the
        transaction's (the database's, on PostgreSQL)."""
        return await self._decider.now(unit)

    def committed(self, decisions: Iterable[Decision]) -> None:
        """Decisions made with :meth:`decide_in` have committed: count them and tell
        their story, as for the orchestrator's own."""
        tell(decisions, self.metrics)

    async def _retrying(
        self, work: Callable[[UnitOfWork], Awaitable[list[Decision]]]
    ) -> list[Decision]:
        for attempt in range(1, MAX_CONFLICT_RETRIES + 1):
            try:
                async with self.store.unit() as unit:
                    decisions = await work(unit)
            except ConcurrencyError:
                log.debug(f"conflict on attempt {attempt}; deciding the batch again")
                continue
            except StoreError as exc:
                if not exc.retryable or attempt == MAX_CONFLICT_RETRIES:
                    raise
                continue
            self.committed(decisions)
            return decisions
        raise ConcurrencyError("a batch kept conflicting with another orchestrator")
