"""The store port: a saga's log, the projection, the outbox and the inbox, and the unit
of work that changes them in one local transaction. ``stores/`` implements it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from sagakit.ports.records import Records

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
