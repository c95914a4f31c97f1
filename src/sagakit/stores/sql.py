"""The saga store over SQLAlchemy Core, shared by the SQLite and PostgreSQL adapters.

Every write the guarantees depend on goes through one unit, one local transaction
(:class:`sagakit.stores.unit.SqlUnit`): inbox claims, log appends, the projection,
snapshots and outbox rows. The store opens units, migrates, loads and reads, and runs
the outbox's claims. The adapters add what differs: how a transaction begins, row
locking, and wake-ups.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import weakref
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Select, delete, func, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sagakit.clock import SystemClock
from sagakit.errors import ConcurrencyError, CorruptLogError, StoreError, UnknownSagaError
from sagakit.model.events import StoredEvent
from sagakit.model.messages import TransportMessage
from sagakit.model.state import SNAPSHOT_SCHEMA, SagaState, state_from_json
from sagakit.model.transitions import fold_stored
from sagakit.ports import Clock, Loaded, OutboxRow, SagaRow
from sagakit.stores import migrations
from sagakit.stores.ends import EndWatch
from sagakit.stores.findings import SagaFindings
from sagakit.stores.schema import (
    VERSION_TABLE,
    saga_events,
    saga_outbox,
    saga_snapshots,
    sagas,
)
from sagakit.stores.unit import InboxStatements, InsertFactory, SqlUnit


@dataclass(slots=True)
class SqlOutboxClaim:
    rows: list[OutboxRow]
    sent: list[int] = field(default_factory=list)

    def mark_sent(self, ids: Sequence[int]) -> None:
        self.sent.extend(ids)


def fold_into(
    loaded: Loaded,
    saga_id: str,
    events: list[StoredEvent],
    snapshot: SagaState | None,
    version: int,
) -> None:
    """Fold one saga's events (after ``snapshot``) into ``loaded``: its state, or why its
    log cannot be read (it must end at the projection's ``version``)."""
    loaded.events_read += len(events)
    try:
        state = fold_stored(saga_id, events, snapshot)
    except CorruptLogError as exc:
        loaded.broken[saga_id] = exc
        return
    if state.version != version:
        loaded.broken[saga_id] = CorruptLogError(
            saga_id,
            state.version + 1,
            f"missing: the log ends at position {state.version} "
            f"but the projection records {version} events",
        )
        return
    loaded.states[saga_id] = state


def _stored(row: Any) -> StoredEvent:
    return StoredEvent(
        saga_id=row.saga_id,
        seq=row.seq,
        type=row.type,
        schema_version=row.schema_version,
        data=row.data,
        recorded_at=row.recorded_at,
    )


def in_saga_order(rows: list[OutboxRow], lowest: Mapping[tuple[str, str], int]) -> list[OutboxRow]:
    """``rows`` (in id order) but those of any saga and destination whose ``lowest``
    unsent row is earlier than its first row here: that row is held by another claim.

    Order is kept per saga *and destination*: what one queue gets of one saga arrives in
    the order it was written, while a saga's messages to different queues, which no
    consumer could order anyway, never wait for each other (a reply does not wait for
    its command's confirm)."""
    first: dict[tuple[str, str], int] = {}
    for row in rows:
        first.setdefault((row.saga_id, row.message.destination), row.id)
    blocked = {key for key, low in lowest.items() if low < first.get(key, low)}
    return [row for row in rows if (row.saga_id, row.message.destination) not in blocked]


class SqlSagaStore(SagaFindings):
    """Shared implementation; use :class:`SqliteSagaStore` or :class:`PostgresSagaStore`."""

    #: ``lock_skipping`` and ``claim_outbox`` hold row locks only where the database has them.
    row_locks = False
    #: What a unit of this store is (an adapter may say its hot statements its own way).
    unit_class: type[SqlUnit] = SqlUnit
    #: What the driver raises when a row's key is taken (another writer got there first).
    conflicts: tuple[type[BaseException], ...] = (IntegrityError,)

    def __init__(
        self,
        url: str,
        engine: AsyncEngine,
        *,
        insert: InsertFactory,
        clock: Clock | None = None,
        snapshot_every: int = 50,
    ) -> None:
        self.url = url
        self.engine = engine
        self.insert = insert
        self.clock: Clock = clock or SystemClock()
        self.snapshot_every = snapshot_every
        self._outbox_event = asyncio.Event()
        # Claims that committed (claim_outbox), and whether rows wait for the next one.
        self._claims_released = 0
        self._waiting_on_claims = False
        self.statements = InboxStatements(insert)
        #: Whether committing outbox rows wakes relays in other processes (NOTIFY). A
        #: runtime that runs its own outbox (the fused one) turns it off.
        self.notify_outbox = True
        #: Told of each commit's outbox messages (publish on commit; see
        #: sagakit.engine.publisher); while set, commits wake no relay.
        self._on_commit: Callable[[Sequence[TransportMessage]], None] | None = None
        self._publisher_grace = 1.0
        #: Waiters for sagas' ends (``wait_ended``), told by this process's commits, by
        #: other processes' announcements where the database has them, and by a poll.
        self.ends = EndWatch(self.statuses, self._listen_for_ends)

    # ------------------------------------------------------------------ transactions

    def _open_write(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection inside a write transaction (adapters add locking and BEGIN)."""
        return self.engine.begin()

    def _open_read(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return self.engine.connect()

    @asynccontextmanager
    async def _begin(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._open_write() as conn:
                yield conn
        except (DBAPIError, OSError) as exc:
            raise self.translate(exc) from exc

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._open_read() as conn:
                yield conn
        except (DBAPIError, OSError) as exc:
            raise self.translate(exc) from exc

    @property
    def wakes_relays(self) -> bool:
        """Whether a commit that wrote outbox rows wakes relays (NOTIFY, and this
        process's): not while a publisher publishes on commit, nor for a fused runtime."""
        return self.notify_outbox and self._on_commit is None

    def publish_on_commit(
        self, hook: Callable[[Sequence[TransportMessage]], None] | None, *, grace: float = 1.0
    ) -> None:
        self._on_commit = hook
        self._publisher_grace = grace

    @property
    def publisher_grace(self) -> float | None:
        """Seconds the relay leaves a new outbox row to the publisher (None: none)."""
        return None if self._on_commit is None else self._publisher_grace

    @asynccontextmanager
    async def unit(self) -> AsyncIterator[SqlUnit]:
        async with self._begin() as conn:
            unit = self.unit_class(self, conn)
            yield unit
            if unit.enqueued and self.wakes_relays and not unit.notified:
                await self._notify(conn)
        if unit.enqueued:
            if self._on_commit is not None and unit.outgoing:
                self._on_commit(unit.outgoing)
            else:
                self._outbox_event.set()
        if unit.ended:
            self.ends.saw(unit.ended)

    async def database_now(self, conn: AsyncConnection) -> float:
        """The clock decisions use (see UnitOfWork.now); the store's own by default."""
        return self.clock.now()

    def translate(self, exc: DBAPIError | OSError) -> Exception:
        """Driver errors become sagakit's, with the URL (never its password) attached."""
        if isinstance(exc, IntegrityError):
            return ConcurrencyError(f"conflicting write: {exc.orig}")
        if isinstance(exc, OSError):
            error = StoreError(f"cannot reach {self.url_safe}: {exc}")
            error.retryable = True
            return error
        cause = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        error = StoreError(f"{self.url_safe}: {cause}")
        error.retryable = bool(exc.connection_invalidated) or self._is_transient(exc)
        return error

    def _is_transient(self, exc: DBAPIError) -> bool:
        return False

    async def _notify(self, conn: AsyncConnection) -> None:
        """Tell other processes the outbox has work; once per transaction."""

    async def _listen_for_ends(self) -> bool:
        """Start hearing other processes' announcements of ended sagas; True while they
        arrive. A database without notifications has none: waiters poll."""
        return False

    async def wait_ended(
        self, saga_ids: Sequence[str], *, timeout: float = 30.0, poll: float | None = None
    ) -> dict[str, str]:
        """The terminal status of each of ``saga_ids``, once every one has ended, however
        many processes decide them; TimeoutError naming the unfinished after ``timeout``.

        Ends decided in this process answer at once; on PostgreSQL so do those announced
        by other processes, with a poll every second as a backstop. Elsewhere the
        projection is polled every ``poll`` seconds (0.02 unless given)."""
        if poll is not None:
            self.ends.poll = poll
        return await self.ends.wait(saga_ids, timeout=timeout)

    def lock_skipping(self, query: Select[Any]) -> Select[Any]:
        return query

    def among(self, column: Any, values: Sequence[Any]) -> ColumnElement[bool]:
        """``column IN values``; PostgreSQL says it as ``= ANY(array)``, one statement
        for any number of values, which the driver prepares once."""
        return column.in_(list(values))  # type: ignore[no-any-return]

    @property
    def url_safe(self) -> str:
        """The URL as the user gave it, without its password: fit for logs and errors."""
        from sqlalchemy.engine import make_url

        return make_url(self.url).render_as_string(hide_password=True)

    # ------------------------------------------------------------------ migrations

    async def migrate(self) -> None:
        # Alembic keeps the migration being run in module globals, so two stores of one
        # process take turns (two processes are kept apart by _migration_lock).
        async with _alembic_turn(), self._begin() as conn:
            await self._migration_lock(conn)
            await conn.run_sync(_upgrade)

    async def _migration_lock(self, conn: AsyncConnection) -> None:
        """Keep two processes from migrating the same database at once."""

    async def is_migrated(self) -> bool:
        async with self._read() as conn:
            return await conn.run_sync(_is_current)

    @property
    def migrates_itself(self) -> bool:
        """Whether the store creates its tables on first use (embedded SQLite does)."""
        return False

    async def schema_version(self) -> str | None:
        """The migration the database is at (None: no sagakit tables); the code's is
        ``migrations.HEAD``. Reads without migrating, even a store that migrates itself."""
        try:
            async with self.engine.connect() as conn:
                return await conn.run_sync(_current_version)
        except (DBAPIError, OSError) as exc:
            raise self.translate(exc) from exc

    async def close(self) -> None:
        await self.ends.close()
        await self.engine.dispose()

    # ------------------------------------------------------------------ loading

    async def load_on(
        self, conn: AsyncConnection, saga_ids: Sequence[str], *, lock: bool
    ) -> Loaded:
        ids = sorted(set(saga_ids))
        loaded = Loaded()
        if not ids:
            return loaded
        head_query = (
            select(sagas.c.saga_id, sagas.c.version, sagas.c.snapshot_version)
            .where(self.among(sagas.c.saga_id, ids))
            .order_by(sagas.c.saga_id)
        )
        if lock and self.row_locks:
            head_query = head_query.with_for_update()
        heads = {row.saga_id: row for row in await conn.execute(head_query)}
        if not heads:
            return loaded
        snapshots: dict[str, SagaState] = {}
        snapped = [sid for sid, head in heads.items() if head.snapshot_version > 0]
        if snapped:
            result = await conn.execute(
                select(saga_snapshots.c.saga_id, saga_snapshots.c.version, saga_snapshots.c.state)
                .where(self.among(saga_snapshots.c.saga_id, snapped))
                .where(saga_snapshots.c.schema == SNAPSHOT_SCHEMA)
            )
            for row in result:
                if row.version == heads[row.saga_id].snapshot_version:
                    snapshots[row.saga_id] = state_from_json(row.state)
        events: dict[str, list[StoredEvent]] = {sid: [] for sid in heads}
        # Sagas with a usable snapshot (or none at all) read only what follows it.
        usable = [sid for sid, h in heads.items() if h.snapshot_version == 0 or sid in snapshots]
        stale = [sid for sid in heads if sid not in usable]
        queries = []
        if usable:
            queries.append(
                select(saga_events)
                .join(sagas, sagas.c.saga_id == saga_events.c.saga_id)
                .where(self.among(saga_events.c.saga_id, usable))
                .where(saga_events.c.seq > sagas.c.snapshot_version)
            )
        if stale:
            queries.append(select(saga_events).where(self.among(saga_events.c.saga_id, stale)))
        for query in queries:
            result = await conn.execute(query.order_by(saga_events.c.saga_id, saga_events.c.seq))
            for row in result:
                events[row.saga_id].append(_stored(row))
        for sid, head in heads.items():
            fold_into(loaded, sid, events[sid], snapshots.get(sid), head.version)
        return loaded

    # ------------------------------------------------------------------ reading

    async def get(self, saga_id: str) -> SagaState:
        async with self._read() as conn:
            if conn.dialect.name == "postgresql":
                # The head, the snapshot and the events must come from one snapshot of the
                # database: read committed would let an append land between them.
                await conn.execution_options(isolation_level="REPEATABLE READ")
            loaded = await self.load_on(conn, [saga_id], lock=False)
        if saga_id in loaded.broken:
            raise loaded.broken[saga_id]
        if saga_id not in loaded.states:
            raise UnknownSagaError(f"no saga with id {saga_id!r}")
        return loaded.states[saga_id]

    async def resolve(self, prefix: str) -> str:
        """The full id of the one saga whose id is or starts with ``prefix``."""
        if not prefix:
            raise UnknownSagaError("no saga with an empty id")
        async with self._read() as conn:
            exact = await conn.scalar(select(sagas.c.saga_id).where(sagas.c.saga_id == prefix))
            if exact is not None:
                return str(exact)
            # the id's own _ and % are characters, not LIKE wildcards
            escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            result = await conn.execute(
                select(sagas.c.saga_id)
                .where(sagas.c.saga_id.like(escaped + "%", escape="\\"))
                .order_by(sagas.c.saga_id)
                .limit(11)
            )
            found = [row[0] for row in result]
        if not found:
            raise UnknownSagaError(f"no saga with id {prefix!r}")
        if len(found) > 1:
            listed = ", ".join(found[:10]) + (" and more" if len(found) > 10 else "")
            raise UnknownSagaError(f"{prefix!r} is the start of several saga ids: {listed}")
        return str(found[0])

    async def history(self, saga_id: str) -> list[StoredEvent]:
        async with self._read() as conn:
            result = await conn.execute(
                select(saga_events)
                .where(saga_events.c.saga_id == saga_id)
                .order_by(saga_events.c.seq)
            )
            events = [_stored(row) for row in result]
        if not events:
            raise UnknownSagaError(f"no saga with id {saga_id!r}")
        return events

    async def list_sagas(
        self,
        *,
        status: str | None = None,
        definition: str | None = None,
        since: float | None = None,
        until: float | None = None,
        key: str | None = None,
        steps: Sequence[str] | None = None,
        limit: int = 100,
        offset: int = 0,
        oldest_first: bool = False,
    ) -> list[SagaRow]:
        """Sagas from the projection, newest change first (or oldest, for a watcher)."""
        order = (
            (sagas.c.updated_at, sagas.c.saga_id)
            if oldest_first
            else (
                sagas.c.updated_at.desc(),
                sagas.c.saga_id,
            )
        )
        query = _filtered(
            select(sagas), status, definition, since=since, until=until, key=key, steps=steps
        ).order_by(*order)
        async with self._read() as conn:
            result = await conn.execute(query.limit(limit).offset(offset))
            return [_row(r) for r in result]

    async def row(self, saga_id: str) -> SagaRow | None:
        """One saga's projection row, if it exists."""
        async with self._read() as conn:
            found = (await conn.execute(select(sagas).where(sagas.c.saga_id == saga_id))).first()
        return _row(found) if found is not None else None

    async def count_sagas(
        self,
        *,
        status: str | None = None,
        definition: str | None = None,
        since: float | None = None,
        until: float | None = None,
        key: str | None = None,
        steps: Sequence[str] | None = None,
    ) -> int:
        query = _filtered(
            select(func.count()).select_from(sagas),
            status,
            definition,
            since=since,
            until=until,
            key=key,
            steps=steps,
        )
        async with self._read() as conn:
            return int(await conn.scalar(query) or 0)

    async def count_by_status(self) -> dict[str, int]:
        async with self._read() as conn:
            result = await conn.execute(
                select(sagas.c.status, func.count()).group_by(sagas.c.status)
            )
            return {row[0]: row[1] for row in result}

    async def unsent(self, destinations: Sequence[str]) -> list[OutboxRow]:
        query = (
            select(saga_outbox)
            .where(saga_outbox.c.sent_at.is_(None))
            .where(self.among(saga_outbox.c.destination, list(destinations)))
            .order_by(saga_outbox.c.id)
        )
        async with self._read() as conn:
            return _outbox_rows(await conn.execute(query))

    async def mark_sent(self, ids: Sequence[int]) -> None:
        if ids:
            async with self.unit() as unit:
                await self._mark_sent(unit.connection, ids)

    async def mark_sent_messages(self, message_ids: Sequence[str]) -> None:
        if message_ids:
            async with self._begin() as conn:
                await conn.execute(
                    update(saga_outbox)
                    .where(self.among(saga_outbox.c.message_id, list(message_ids)))
                    .where(saga_outbox.c.sent_at.is_(None))
                    .values(sent_at=self.clock.now())
                )

    async def active(self, definitions: Sequence[str]) -> list[SagaRow]:
        query = select(sagas).where(
            sagas.c.status.in_(("running", "compensating")),
            sagas.c.current_step.is_not(None),
            self.among(sagas.c.definition, sorted(set(definitions))),
        )
        async with self._read() as conn:
            return [_row(r) for r in await conn.execute(query)]

    async def statuses(self, saga_ids: Sequence[str]) -> dict[str, str]:
        return {saga_id: status for saga_id, (status, _) in (await self.heads(saga_ids)).items()}

    async def heads(self, saga_ids: Sequence[str]) -> dict[str, tuple[str, int]]:
        """Status and log version of each saga that exists, from the projection."""
        ids = list(dict.fromkeys(saga_ids))
        found: dict[str, tuple[str, int]] = {}
        async with self._read() as conn:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                result = await conn.execute(
                    select(sagas.c.saga_id, sagas.c.status, sagas.c.version).where(
                        sagas.c.saga_id.in_(chunk)
                    )
                )
                found.update({row.saga_id: (row.status, row.version) for row in result})
        return found

    async def next_wake(self, saga_ids: Sequence[str]) -> float | None:
        """The earliest retry or deadline among these sagas, if any is pending."""
        async with self._read() as conn:
            wake = await conn.scalar(
                select(func.min(sagas.c.wake_at)).where(sagas.c.saga_id.in_(list(saga_ids)))
            )
        return float(wake) if wake is not None else None

    # ------------------------------------------------------------------ outbox

    @asynccontextmanager
    async def claim_outbox(
        self, *, limit: int, exclude: Sequence[int] = (), older_than: float | None = None
    ) -> AsyncIterator[SqlOutboxClaim]:
        if self.row_locks:
            # Hold the rows for the whole publish: a relay that dies releases them at once.
            async with self._begin() as conn:
                released = self._claims_released
                rows, kept = await self._claim_in_order(conn, limit, exclude, older_than)
                if len(kept) < len(rows):
                    self._held_back(released)
                claim = SqlOutboxClaim(kept)
                yield claim
                if claim.sent:
                    await self._mark_sent(conn, claim.sent)
            if claim.sent:
                self._claims_released += 1
                if self._waiting_on_claims:
                    self._waiting_on_claims = False
                    self._outbox_event.set()
            return
        async with self._read() as conn:
            claim = SqlOutboxClaim(await self._claim_rows(conn, limit, exclude, older_than))
        yield claim
        if claim.sent:
            async with self.unit() as unit:
                await self._mark_sent(unit.connection, claim.sent)

    async def _claim_rows(
        self,
        conn: AsyncConnection,
        limit: int,
        exclude: Sequence[int],
        older_than: float | None = None,
    ) -> list[OutboxRow]:
        """The first ``limit`` unsent rows but ``exclude`` (and written before
        ``older_than``, if given), locked where rows lock."""
        query = (
            select(saga_outbox)
            .where(saga_outbox.c.sent_at.is_(None))
            .order_by(saga_outbox.c.id)
            .limit(limit)
        )
        if exclude:
            query = query.where(~self.among(saga_outbox.c.id, exclude))
        if older_than is not None:
            query = query.where(
                saga_outbox.c.relay_after.is_(None) | (saga_outbox.c.relay_after <= older_than)
            )
        return _outbox_rows(await conn.execute(self.lock_skipping(query)))

    async def _claim_in_order(
        self,
        conn: AsyncConnection,
        limit: int,
        exclude: Sequence[int],
        older_than: float | None = None,
    ) -> tuple[list[OutboxRow], list[OutboxRow]]:
        """The rows claimed (locked), and those of them that may go now (see
        _in_saga_order)."""
        rows = await self._claim_rows(conn, limit, exclude, older_than)
        return rows, await self._in_saga_order(conn, rows)

    async def _first_unsent(
        self, conn: AsyncConnection, saga_ids: list[str]
    ) -> dict[tuple[str, str], int]:
        """The id of each saga's earliest unsent row for each destination."""
        result = await conn.execute(
            select(saga_outbox.c.saga_id, saga_outbox.c.destination, func.min(saga_outbox.c.id))
            .where(saga_outbox.c.sent_at.is_(None), self.among(saga_outbox.c.saga_id, saga_ids))
            .group_by(saga_outbox.c.saga_id, saga_outbox.c.destination)
        )
        return {(row[0], row[1]): row[2] for row in result}

    async def _mark_sent(self, conn: AsyncConnection, ids: Sequence[int]) -> None:
        await conn.execute(
            update(saga_outbox)
            .where(self.among(saga_outbox.c.id, ids))
            .values(sent_at=self.clock.now())
        )

    async def _in_saga_order(self, conn: AsyncConnection, rows: list[OutboxRow]) -> list[OutboxRow]:
        """Drop the rows of any saga that has an earlier unsent row for the same
        destination outside this claim (held by another relay or batch), so what a queue
        gets of a saga is never published out of order."""
        if not rows:
            return rows
        lowest = await self._first_unsent(conn, list({row.saga_id for row in rows}))
        return in_saga_order(rows, lowest)

    def _held_back(self, released: int) -> None:
        """A claim left rows behind an earlier row of their saga that another claim holds
        (one of this process's relay batches, typically). They can go once that claim
        commits, which wakes the relay here, rather than at its next poll; if a claim
        committed while ours was reading (``released`` changed), at once."""
        if self._claims_released != released:
            self._outbox_event.set()
        else:
            self._waiting_on_claims = True

    async def wait_for_outbox(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._outbox_event.wait(), timeout)
        self._outbox_event.clear()

    async def outbox_lag(self, now: float) -> float:
        async with self._read() as conn:
            oldest = await conn.scalar(
                select(func.min(saga_outbox.c.created_at)).where(saga_outbox.c.sent_at.is_(None))
            )
        return max(0.0, now - oldest) if oldest is not None else 0.0

    async def unsent_count(self) -> int:
        async with self._read() as conn:
            count = await conn.scalar(
                select(func.count()).select_from(saga_outbox).where(saga_outbox.c.sent_at.is_(None))
            )
        return int(count or 0)

    async def prune_outbox(self, sent_before: float) -> int:
        async with self.unit() as unit:
            result = await unit.connection.execute(
                delete(saga_outbox).where(saga_outbox.c.sent_at < sent_before)
            )
        return int(result.rowcount or 0)


def _filtered(
    query: Any,
    status: str | None,
    definition: str | None,
    *,
    since: float | None,
    until: float | None,
    key: str | None,
    steps: Sequence[str] | None,
) -> Any:
    if status:
        query = query.where(sagas.c.status == status)
    if definition:
        query = query.where(sagas.c.definition == definition)
    if since is not None:
        query = query.where(sagas.c.updated_at >= since)
    if until is not None:
        query = query.where(sagas.c.updated_at <= until)
    if key:
        query = query.where(sagas.c.key == key)
    if steps is not None:
        query = query.where(sagas.c.current_step.in_(list(steps)))
    return query


def _row(r: Any) -> SagaRow:
    return SagaRow(
        saga_id=r.saga_id,
        definition=r.definition,
        definition_version=r.definition_version,
        key=r.key,
        status=r.status,
        current_step=r.current_step,
        deadline=r.deadline,
        version=r.version,
        created_at=r.created_at,
        updated_at=r.updated_at,
        reason=r.reason,
    )


def _outbox_rows(result: Any) -> list[OutboxRow]:
    return [
        OutboxRow(
            id=r.id,
            message=TransportMessage(
                destination=r.destination,
                message_id=r.message_id,
                body=r.body.encode(),
                headers=json.loads(r.headers),
            ),
            saga_id=r.saga_id,
            created_at=r.created_at,
        )
        for r in result
    ]


_ALEMBIC_TURNS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def _alembic_turn() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    turn = _ALEMBIC_TURNS.get(loop)
    if turn is None:
        turn = _ALEMBIC_TURNS[loop] = asyncio.Lock()
    return turn


def _alembic_config(connection: Any) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Any) -> None:
    from alembic import command

    command.upgrade(_alembic_config(connection), "head")


def _current_version(connection: Any) -> str | None:
    from sqlalchemy import inspect, text

    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    current = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
    return None if current is None else str(current)


def _is_current(connection: Any) -> bool:
    return _current_version(connection) == migrations.HEAD
