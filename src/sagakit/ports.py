"""The ports: what the orchestrator, participants and relay need from the outside world.

Adapters (``stores/``, ``transports/``) implement these; the core depends on nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from sagakit.model.messages import new_id

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from sagakit.errors import CorruptLogError
    from sagakit.model.decision import Decision
    from sagakit.model.events import StoredEvent
    from sagakit.model.messages import Outgoing, TransportMessage
    from sagakit.model.state import SagaState


class Clock(Protocol):
    """Seconds since the epoch. Tests pass a clock that jumps."""

    def now(self) -> float: ...


@dataclass(frozen=True, slots=True)
class SagaRow:
    """One row of the ``sagas`` projection: what ``sagakit list`` shows."""

    saga_id: str
    definition: str
    definition_version: int
    key: str | None
    status: str
    current_step: str | None
    deadline: float | None
    version: int
    created_at: float
    updated_at: float
    reason: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class SagaSearch:
    """What to find sagas by; every field is optional and those given must all hold.

    ``key`` matches exactly, or as a pattern when it holds ``*`` (any text). ``reason``
    matches anywhere in the saga's reason, ignoring case, ``*`` again any text.
    ``stopped_at`` names a step the saga is at now, or where its log says it turned back
    or asked for a person. ``since`` and ``until`` bound its last change; ``order`` puts
    the newest change first, or the longest (last change minus start) first.
    """

    status: str | None = None
    definition: str | None = None
    definition_version: int | None = None
    key: str | None = None
    reason: str | None = None
    stopped_at: str | None = None
    since: float | None = None
    until: float | None = None
    order: Literal["changed", "duration"] = "changed"


@dataclass(slots=True)
class Loaded:
    """Sagas read for a decision: their states, and those whose logs cannot be read."""

    states: dict[str, SagaState] = field(default_factory=dict)
    broken: dict[str, CorruptLogError] = field(default_factory=dict)
    events_read: int = 0


class LockRecords(Protocol):
    """Semantic locks (sagakit.engine.locks): who holds a resource, who waits in line."""

    async def holder(self, resource: str) -> str | None: ...

    async def first_in_line(self, resource: str) -> str | None: ...

    async def take(
        self, resource: str, *, saga_id: str, participant: str, step: str, at: float
    ) -> bool:
        """Take ``resource`` if nobody holds it (and leave its line); whether it did."""
        ...

    async def queue(self, resource: str, saga_id: str, *, at: float) -> None: ...

    async def release(self, resource: str, saga_id: str) -> None: ...

    async def release_saga(self, saga_id: str, participant: str) -> int:
        """Every lock and place in line of ``saga_id`` at ``participant``; how many locks."""
        ...

    async def count_held(self, saga_id: str) -> int: ...

    async def all(self) -> list[dict[str, Any]]: ...


class BreakerRecords(Protocol):
    """Circuit breakers' state (sagakit.engine.breakers), as rows by name."""

    async def load(self, names: Sequence[str]) -> list[dict[str, Any]]: ...

    async def save(self, rows: Sequence[dict[str, Any]]) -> None: ...

    async def all(self) -> list[dict[str, Any]]: ...


class RuleRecords(Protocol):
    """Published routing rule sets (sagakit.engine.rules), one per saga and version."""

    async def newest(self, saga: str) -> int | None: ...

    async def source(self, saga: str, version: int) -> str | None: ...

    async def add(self, saga: str, version: int, source: str, *, at: float) -> None: ...

    async def published(self) -> list[tuple[str, int, float]]: ...


class HeartbeatRecords(Protocol):
    """Running orchestrators' beats (sagakit.engine.liveness)."""

    async def beat(self, group: str, member: str, *, at: float, forget_before: float) -> None: ...

    async def newest(self, group: str) -> float | None: ...


class AuditRecords(Protocol):
    """Operators' actions on the record (sagakit.audit)."""

    async def add(
        self, *, at: float, who: str, action: str, target: str, note: str, via: str
    ) -> None: ...

    async def recent(
        self, *, limit: int, offset: int, target: str | None = None
    ) -> list[dict[str, Any]]: ...


@dataclass(frozen=True, slots=True)
class Records:
    """The store's smaller tables, inside one transaction (``UnitOfWork.records``)."""

    locks: LockRecords
    breakers: BreakerRecords
    rules: RuleRecords
    heartbeats: HeartbeatRecords
    audit: AuditRecords


class UnitOfWork(Protocol):
    """One local transaction. Everything done through it commits or rolls back together."""

    @property
    def connection(self) -> AsyncConnection:
        """The transaction's connection, for a participant's own business writes."""
        ...

    @property
    def records(self) -> Records:
        """The store's smaller tables (locks, breakers, rules, heartbeats, the record of
        operators' actions), in this transaction."""
        ...

    def records_on(self, connection: Any) -> Records:
        """The same, through ``connection``: a wrapper of this transaction's own (the
        one a batch's handlers get, which opens their savepoints)."""
        ...

    async def now(self) -> float:
        """The time decisions in this transaction use: the database's clock where the
        store keeps one (PostgreSQL), so processes whose clocks disagree agree on
        deadlines; otherwise the store's clock."""
        ...

    async def write_many(self, statement: Any, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run the write ``statement`` once for each of ``rows`` (an executemany)."""
        ...

    async def claim(self, consumer: str, keys: Sequence[str]) -> set[str]:
        """Insert inbox rows; return the keys that were new (the rest are duplicates)."""
        ...

    async def claim_each(self, pairs: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Insert ``(consumer, key)`` inbox rows of several consumers at once; return the
        pairs that were new (what claim does for each consumer)."""
        ...

    async def claim_and_load(
        self, consumer: str, keys: Sequence[tuple[str, str]]
    ) -> tuple[set[str], Loaded]:
        """Claim each ``(key, saga id)``'s key for ``consumer`` and load (row-locked) the
        sagas whose key was new: what an orchestrator does with a batch of replies
        (one statement on PostgreSQL)."""
        ...

    async def claim_commands(
        self,
        pairs: Sequence[tuple[str, str]],
        actions: Mapping[tuple[str, str], tuple[str, str]],
    ) -> tuple[set[tuple[str, str]], dict[tuple[str, str], str | None]]:
        """Claim every pair as claim_each does, then, for each pair found new that
        ``actions`` maps to another (a compensation's key to its action's), that pair
        too. Returns the pairs found new, and the stored reply of each action pair that
        was not (what a batch of commands asks its inbox first). An action pair whose
        row another transaction committed while this claim waited for it may be
        missing from both: ask ``replies`` for it (a new statement sees it)."""
        ...

    async def replies(self, consumer: str, keys: Sequence[str]) -> dict[str, str | None]:
        """The stored replies of already-claimed inbox keys."""
        ...

    async def set_reply(self, consumer: str, key: str, reply: str) -> None: ...

    async def set_replies(self, rows: Sequence[tuple[str, str, str]]) -> None:
        """Many ``(consumer, key, reply)`` at once."""
        ...

    async def forget(self, consumer: str, key: str) -> None:
        """Drop an inbox row claimed in this transaction (the work did not happen)."""
        ...

    async def load(self, saga_ids: Sequence[str], *, lock: bool = True) -> Loaded:
        """Read sagas (snapshot plus later events); with ``lock``, hold them until commit."""
        ...

    async def due(self, now: float, limit: int) -> list[str]:
        """Claim sagas whose next deadline or retry is due, skipping ones locked elsewhere."""
        ...

    async def append(
        self,
        decisions: Sequence[Decision],
        *,
        sent: Sequence[str] = (),
        replies: Sequence[tuple[str, str, str]] = (),
    ) -> None:
        """Append each decision's events, update the projection and snapshot, and enqueue
        its commands in the outbox; mark the outbox messages ``sent`` (by message id) as
        sent, and store the inbox ``replies`` (consumer, key, reply: keys this unit
        claimed) as set_replies would. Raises ConcurrencyError if a log moved meanwhile."""
        ...

    async def enqueue(
        self, messages: Sequence[Outgoing], *, replies: Sequence[tuple[str, str, str]] = ()
    ) -> None:
        """Put messages in the outbox (participants' replies and events), storing
        ``replies`` (``(consumer, key, reply)``, as set_replies) with them."""
        ...

    async def quarantine(self, reasons: dict[str, str]) -> None:
        """Mark sagas whose logs cannot be read as needing attention, and stop their timers."""
        ...

    def savepoint(self) -> AbstractAsyncContextManager[None]:
        """Roll back only what happens inside the block if it raises."""
        ...


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    message: TransportMessage
    saga_id: str
    created_at: float


class OutboxClaim(Protocol):
    """A batch of unsent outbox rows held by one relay until it says which were sent."""

    rows: list[OutboxRow]

    def mark_sent(self, ids: Sequence[int]) -> None: ...


class SagaStore(Protocol):
    """Saga logs, the projection, the outbox and the inbox, in one database."""

    url: str
    #: The clock outbox rows are stamped with (``created_at``).
    clock: Clock

    def unit(self) -> AbstractAsyncContextManager[UnitOfWork]:
        """Begin a local transaction; it commits when the block ends without error."""
        ...

    async def migrate(self) -> None: ...

    async def close(self) -> None: ...

    async def get(self, saga_id: str) -> SagaState:
        """The current state of one saga; raises UnknownSagaError or CorruptLogError."""
        ...

    async def history(self, saga_id: str) -> list[StoredEvent]:
        """Every stored event of one saga, oldest first, as stored."""
        ...

    async def list_sagas(
        self,
        *,
        status: str | None = None,
        definition: str | None = None,
        since: float | None = None,
        key: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[SagaRow]: ...

    async def count_by_status(self) -> dict[str, int]: ...

    async def search_sagas(
        self, search: SagaSearch, *, limit: int = 50, offset: int = 0
    ) -> tuple[list[SagaRow], int]:
        """The sagas ``search`` finds (a page of them, in its order), and how many."""
        ...

    async def count_by_definition(self) -> dict[tuple[str, int, str], int]:
        """How many sagas of each (definition, version) are in each status."""
        ...

    async def events_per_interval(
        self, types: Sequence[str], *, since: float, until: float, every: float
    ) -> dict[str, list[int]]:
        """Per event type, how many the logs recorded in each interval of ``every``
        seconds from ``since`` (inclusive) to ``until`` (exclusive)."""
        ...

    async def recent_events(
        self, types: Sequence[str], *, since: float, limit: int
    ) -> list[StoredEvent]:
        """The newest ``limit`` stored events of ``types`` recorded at or after ``since``,
        newest first."""
        ...

    async def statuses(self, saga_ids: Sequence[str]) -> dict[str, str]:
        """The projection's status of each saga that exists."""
        ...

    async def row(self, saga_id: str) -> SagaRow | None:
        """One saga's projection row, if it exists."""
        ...

    def translate(self, exc: Any) -> Exception:
        """A driver's error as sagakit's: a StoreError (``retryable`` when the cause
        passes: a deadlock, a lost connection), or a conflict of a row's key."""
        ...

    async def unsent(self, destinations: Sequence[str]) -> list[OutboxRow]:
        """The outbox's unsent rows for these destinations, oldest first: what a runtime
        that delivers to them in-process (``Runtime.fuse``) picks up."""
        ...

    async def mark_sent(self, ids: Sequence[int]) -> None:
        """Mark these outbox rows sent (delivered in-process, not by a relay)."""
        ...

    async def mark_sent_messages(self, message_ids: Sequence[str]) -> None:
        """Mark the outbox rows of these messages sent (a publisher's confirms)."""
        ...

    def publish_on_commit(
        self, hook: Callable[[Sequence[TransportMessage]], None] | None, *, grace: float = 1.0
    ) -> None:
        """Call ``hook`` after each commit with the messages it wrote to the outbox, and
        wake no relay for them: relays leave those rows alone for ``grace`` seconds
        (see sagakit.engine.publisher). None turns it off."""
        ...

    async def active(self, definitions: Sequence[str]) -> list[SagaRow]:
        """The sagas of these definitions that are running or compensating with a step
        in flight (``current_step`` set): where a restarted runtime looks for the steps
        an earlier one ran from memory."""
        ...

    async def wait_ended(
        self, saga_ids: Sequence[str], *, timeout: float = 30.0, poll: float | None = None
    ) -> dict[str, str]:
        """The terminal status of each of ``saga_ids`` once every one has ended, however
        many processes decide them; TimeoutError naming the unfinished after
        ``timeout``. The one way sagakit waits for sagas (SagaHandle.outcome,
        Orchestrator.outcomes)."""
        ...

    def claim_outbox(
        self, *, limit: int, exclude: Sequence[int] = (), older_than: float | None = None
    ) -> AbstractAsyncContextManager[OutboxClaim]:
        """Hold up to ``limit`` unsent rows (with ``older_than``, by the store's clock,
        only those no publisher holds after it); rows marked sent are recorded on exit."""
        ...

    async def wait_for_outbox(self, timeout: float) -> None:
        """Return when something may have been enqueued, or after ``timeout`` seconds."""
        ...

    async def outbox_lag(self, now: float) -> float:
        """Age in seconds of the oldest unsent outbox row (0 when the outbox is empty)."""
        ...

    async def prune_outbox(self, sent_before: float) -> int: ...


@dataclass(frozen=True, slots=True)
class PublishResult:
    """Which messages a broker confirmed, and why the others were refused."""

    confirmed: set[str]
    failed: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Delivery:
    """A message handed to a consumer; ``attempt`` counts deliveries of this message.

    A handler that finds a message it can never handle calls :meth:`reject`; the
    transport then dead-letters that one message with the reason and acks the rest. A
    handler that cannot handle a message *yet* calls :meth:`retry`; the transport brings
    that one message back after its retry tier's delay, as if the handler had raised.
    A handler whose dependency is down (an open circuit breaker) calls :meth:`defer`:
    the message comes back after about the given wait, and the try does not count
    toward the transport's delivery limit. A handler whose work for a delivery has
    committed while the rest of its batch goes on may call :meth:`done`, so the
    transport can acknowledge it now rather than with the batch.
    """

    message: TransportMessage
    attempt: int = 1
    rejection: tuple[str, str] | None = None
    retry_reason: str | None = None
    #: Set by a transport that can acknowledge one delivery before its batch returns.
    on_done: Callable[[], None] | None = field(default=None, repr=False, compare=False)
    #: Set by :meth:`defer`: come back after about this many seconds, uncounted.
    deferred_for: float | None = None

    def reject(self, reason: str, detail: str) -> None:
        self.rejection = (reason, detail)

    def retry(self, reason: str) -> None:
        self.retry_reason = reason
        self.deferred_for = None

    def defer(self, reason: str, after: float) -> None:
        """Bring this message back after about ``after`` seconds (the transport's nearest
        delay at or above it, or its longest) with its attempt unchanged: a dependency
        being down is not the message's fault, so however long the outage lasts, it
        never reaches the delivery limit and the dead letters on that account."""
        self.retry_reason = reason
        self.deferred_for = max(after, 0.0)

    def reset(self) -> None:
        """Forget a verdict (the handler is deciding the batch again)."""
        self.rejection = self.retry_reason = self.deferred_for = None

    def done(self) -> None:
        """This delivery's work has committed: it needs no verdict and may be
        acknowledged before the rest of its batch is."""
        if self.on_done is not None and self.rejection is None and self.retry_reason is None:
            self.on_done()


BatchHandler = Callable[[Sequence[Delivery]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message set aside because it can never be handled, with why and from where.

    ``reason`` is one of: ``malformed`` (not JSON), ``schema`` (fails its schema),
    ``unknown_type``, ``oversize``, ``non_retryable`` (the handler said so),
    ``delivery_limit`` (retried too often), or another word an application chose.
    """

    id: str
    message: TransportMessage
    queue: str
    reason: str
    detail: str
    attempts: int
    dead_at: float

    @classmethod
    def now(
        cls, message: TransportMessage, queue: str, reason: str, detail: str, attempts: int
    ) -> DeadLetter:
        """A letter set aside at this moment, under a fresh id."""
        return cls(new_id(), message, queue, reason, detail, attempts, time.time())


class DeadLetterQueue(Protocol):
    """Where dead letters wait for a person: list, look, replay, or throw away."""

    async def add(self, letter: DeadLetter) -> None:
        """Set a message aside (the transport calls this when it dead-letters)."""
        ...

    async def list(self, *, limit: int = 100) -> list[DeadLetter]: ...

    async def get(self, dead_letter_id: str) -> DeadLetter:
        """One dead letter; raises LookupError for an unknown id."""
        ...

    async def replay(self, ids: Sequence[str] | None = None) -> int:
        """Send dead letters back to their original queues (all when ``ids`` is None),
        as fresh deliveries; return how many went back."""
        ...

    async def purge(self) -> int: ...

    async def depth(self) -> int: ...


#: The delays (seconds) before each redelivery of a message whose handler failed.
DEFAULT_RETRY_TIERS: tuple[float, ...] = (1.0, 5.0, 30.0, 120.0)


class Subscription(Protocol):
    async def stop(self, *, grace: float = 0.0) -> None:
        """Take no more messages; let the batch being handled finish within ``grace``
        seconds, then cancel it (its transaction rolls back and its messages go back to
        the queue for another consumer). Returns within about ``grace`` seconds."""
        ...


class Transport(Protocol):
    """Moves bytes between queues. ``publish`` returns only what the broker confirmed.

    A destination is a queue name, or ``sagakit.events/<routing key>`` for an event,
    which reaches every queue bound to a matching pattern (``*`` one word, ``#`` any).
    """

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def declare(self, queue: str) -> None:
        """Create a durable work queue (and its retry tiers), if it does not exist."""
        ...

    async def bind(self, queue: str, pattern: str) -> None:
        """Deliver events whose routing key matches ``pattern`` to ``queue`` too."""
        ...

    async def publish(self, messages: Sequence[TransportMessage]) -> PublishResult: ...

    async def consume(
        self, queue: str, handler: BatchHandler, *, prefetch: int = 64, concurrency: int = 1
    ) -> Subscription:
        """Deliver batches to ``handler``, up to ``concurrency`` of them at once (each
        its own call, so a slow one holds only its own messages). A batch is
        acknowledged when it returns, each rejected delivery is dead-lettered, and when
        the handler raises every message of the batch comes back after its retry tier's
        delay (attempt + 1), until the delivery limit dead-letters it."""
        ...

    @property
    def dead_letters(self) -> DeadLetterQueue: ...
