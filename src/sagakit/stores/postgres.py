"""The distributed store: PostgreSQL through asyncpg, with row locks and LISTEN/NOTIFY."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Select,
    any_,
    bindparam,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from sagakit.model.decision import Decision
from sagakit.model.events import StoredEvent
from sagakit.model.messages import Outgoing, TransportMessage
from sagakit.ports import Clock, Loaded, OutboxRow
from sagakit.stores.ends import ENDED_CHANNEL, announcements, heard
from sagakit.stores.postgres_driver import (
    DRIVER_ERRORS,
    TRANSIENT,
    driver_error,
    driver_of,
    on_driver,
    positional,
)
from sagakit.stores.postgres_statements import (
    CLAIM,
    CLAIM_AND_LOAD,
    CLAIM_COMMANDS,
    CLAIM_OUTBOX,
    DUE,
    LOAD_LOCKED,
    LOAD_UNLOCKED,
    MARK_SENT,
    MARK_SENT_BY_ID,
    MARK_SENT_MESSAGES,
    REPLIES,
    SET_REPLIES,
    SET_REPLIES_FROM,
    bulk_insert,
    together,
)
from sagakit.stores.postgres_wakeups import OUTBOX_CHANNEL, ChannelListener
from sagakit.stores.schema import saga_events, saga_outbox, saga_snapshots, sagas
from sagakit.stores.sql import SqlSagaStore, fold_into, in_saga_order
from sagakit.stores.unit import SqlUnit

#: Seconds between two reads of the database's clock (see database_now).
_CLOCK_REREAD = 1.0


#: Planner settings for the store's own connections (``settings=`` adds or overrides).
#: Its statements fetch and lock a few rows by key among many; two server defaults made
#: PostgreSQL scan whole tables for them instead. ``random_page_cost`` 4 prices every
#: index probe as a disk seek, while a saga store's hot rows are in memory. And a
#: prepared statement's generic plan, cached after five runs, is kept as long as the
#: connection lives: one cached while a new database's tables were nearly empty read
#: the inbox and the sagas table whole on every later call (3,000 rows per saga in the
#: benchmark). A plan made per execution costs a little planning and sees the tables as
#: they are.
SESSION_SETTINGS: Mapping[str, str] = {
    "random_page_cost": "1.1",
    "plan_cache_mode": "force_custom_plan",
}


def asyncpg_url(url: str) -> str:
    """``postgresql://...`` as SQLAlchemy's asyncpg URL."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


class PostgresUnit(SqlUnit):
    """A unit whose hot statements go to asyncpg itself, on the transaction's connection.

    Each one is a single fixed statement whatever the number of rows (arrays and
    ``unnest`` instead of a VALUES list per row or an executemany), so it is prepared
    once per connection and costs one round trip and little Python; what is not hot stays
    with SQLAlchemy Core, as in :class:`SqlUnit`.
    """

    _driver: Any = None

    async def _driver_connection(self) -> Any:
        if self._driver is None:
            self._driver = await driver_of(self._conn)
        return self._driver

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        driver = await self._driver_connection()
        return await on_driver(self._store, self._conn, driver, sql, args)

    async def write_many(self, statement: Any, rows: Sequence[Mapping[str, Any]]) -> None:
        """A plain ``text()`` write goes to asyncpg itself, one pipelined executemany for
        every row (SQLAlchemy's work around it was a quarter of the call's time, and
        the business writes of a batch are on the path every transaction queues for);
        anything else, or outside a transaction, through SQLAlchemy."""
        plan = positional(statement, self._conn.dialect)
        driver = await self._driver_connection()
        if plan is None or not driver.is_in_transaction():
            await super().write_many(statement, rows)
            return
        sql, names = plan
        try:
            await driver.executemany(sql, [[row[n] for n in names] for row in rows])
        except DRIVER_ERRORS as exc:
            raise driver_error(self._store, exc) from exc

    async def claim(self, consumer: str, keys: Sequence[str]) -> set[str]:
        unique = list(dict.fromkeys(keys))
        if not unique:
            return set()
        rows = await self._fetch(CLAIM, consumer, unique, self._store.clock.now())
        return {row[0] for row in rows}

    async def claim_commands(
        self,
        pairs: Sequence[tuple[str, str]],
        actions: Mapping[tuple[str, str], tuple[str, str]],
    ) -> tuple[set[tuple[str, str]], dict[tuple[str, str], str | None]]:
        """One statement where there were up to five: the commands' keys, the action
        keys of the compensations among them found new, and the replies of those
        actions that had run (one round trip per consumer before)."""
        unique = list(dict.fromkeys(pairs))
        if not unique:
            return set(), {}
        undo = [actions.get(pair, (None, None)) for pair in unique]
        rows = await self._fetch(
            CLAIM_COMMANDS,
            [c for c, _ in unique],
            [k for _, k in unique],
            [c for c, _ in undo],
            [k for _, k in undo],
            self._store.clock.now(),
        )
        fresh = {(r[1], r[2]) for r in rows if r[0] != "ran"}
        return fresh, {(r[1], r[2]): r[3] for r in rows if r[0] == "ran"}

    async def replies(self, consumer: str, keys: Sequence[str]) -> dict[str, str | None]:
        if not keys:
            return {}
        rows = await self._fetch(REPLIES, consumer, list(keys))
        return {row[0]: row[1] for row in rows}

    async def set_replies(self, rows: Sequence[tuple[str, str, str]]) -> None:
        if rows:  # (an append carries them too: SET_REPLIES_FROM)
            await self._fetch(SET_REPLIES, *(list(column) for column in zip(*rows, strict=True)))

    async def enqueue(
        self, messages: Sequence[Outgoing], *, replies: Sequence[tuple[str, str, str]] = ()
    ) -> None:
        """With replies, one statement stores them and inserts the outbox rows (a
        participant's batch ends so: one round trip where there were two)."""
        if not replies:
            await super().enqueue(messages)
            return
        rows = self._outbox_rows(messages)
        inserts = [SET_REPLIES]
        args: list[Any] = [list(column) for column in zip(*replies, strict=True)]
        if rows:
            inserts.append(bulk_insert(saga_outbox, tuple(rows[0]), start=4))
            args.append(rows)
        notify = bool(rows) and self._store.wakes_relays and not self.notified
        await self._fetch(together(tuple(inserts), notify=notify, payloads=None), *args)
        self.notified = self.notified or notify
        self.enqueued += len(rows)

    async def _insert(self, table: Any, rows: list[dict[str, Any]]) -> None:
        sql = bulk_insert(table, tuple(rows[0]))
        if table is saga_outbox and self._store.wakes_relays and not self.notified:
            # The NOTIFY rides on the insert instead of a round trip of its own; it is
            # delivered at commit, and never if the transaction rolls back.
            sql = together((sql,), notify=True, payloads=None)
            self.notified = True
        await self._fetch(sql, rows)

    async def _upsert(
        self,
        table: Any,
        keys: list[str],
        rows: list[dict[str, Any]],
        *,
        keep: Sequence[str] = (),
    ) -> None:
        sql = bulk_insert(table, tuple(rows[0]), keys=tuple(keys), keep=tuple(keep))
        await self._fetch(sql, rows)

    async def append(
        self,
        decisions: Sequence[Decision],
        *,
        sent: Sequence[str] = (),
        replies: Sequence[tuple[str, str, str]] = (),
    ) -> None:
        """Every row of the batch's decisions in one statement: the events, the
        projection, the snapshots and the outbox, the outbox rows marked sent and the
        inbox replies stored, with the NOTIFY and the end announcements riding on it
        (one round trip where there were six)."""
        rows = self._appended(decisions)
        outbox = self._outbox_rows(rows.messages)
        parts: list[tuple[Any, list[dict[str, Any]], tuple[str, ...], tuple[str, ...]]] = [
            (sagas, rows.idle, ("saga_id",), ("snapshot_version",)),
            (saga_events, rows.events, (), ()),
            (sagas, rows.projection, ("saga_id",), ("snapshot_version",)),
            (sagas, rows.snapshotted, ("saga_id",), ()),
            (saga_snapshots, rows.snapshots, ("saga_id",), ()),
            (saga_outbox, outbox, (), ()),
        ]
        inserts: list[str] = []
        args: list[Any] = []
        for table, table_rows, keys, keep in parts:
            if table_rows:
                columns = tuple(table_rows[0])
                inserts.append(
                    bulk_insert(table, columns, keys=keys, keep=keep, start=len(args) + 1)
                )
                args.append(table_rows)
        if sent:
            inserts.append(MARK_SENT_BY_ID.format(ids=len(args) + 1, at=len(args) + 2))
            args.extend((list(sent), await self.now()))
        if replies:
            inserts.append(SET_REPLIES_FROM.format(*range(len(args) + 1, len(args) + 4)))
            args.extend(list(column) for column in zip(*replies, strict=True))
        if not inserts:
            return
        notify = bool(outbox) and self._store.wakes_relays and not self.notified
        payloads = None
        if self.unannounced:
            args.append(announcements(self.unannounced))
            payloads = len(args)
            self.unannounced = []
        try:
            await self._fetch(together(tuple(inserts), notify=notify, payloads=payloads), *args)
        except self._store.conflicts as exc:
            # Only the events' key can clash: the others are upserts or fresh ids.
            raise rows.conflict() from exc
        self.notified = self.notified or notify
        self.enqueued += len(outbox)

    async def claim_and_load(
        self, consumer: str, keys: Sequence[tuple[str, str]]
    ) -> tuple[set[str], Loaded]:
        """One statement: the claim, and the load of every saga named (row-locked). A
        saga whose key was not new is loaded too, and its rows locked: duplicates are
        rare, and a round trip is saved on every batch."""
        if not keys:
            return set(), Loaded()
        unique = list(dict.fromkeys(key for key, _ in keys))
        ids = sorted({saga for _, saga in keys})
        rows = await self._fetch(CLAIM_AND_LOAD, consumer, unique, self._store.clock.now(), ids)
        fresh = {r[8] for r in rows if r[8] is not None}
        wanted = {saga for key, saga in keys if key in fresh}
        return fresh, await self._loaded([r for r in rows if r[8] is None and r[0] in wanted])

    async def due(self, now: float, limit: int) -> list[str]:
        """The timer loop's claim, said to asyncpg itself: it runs every tenth of a
        second in every orchestrator, and SQLAlchemy built and compiled the query anew
        each time (more Python than the rest of an idle tick)."""
        return [row[0] for row in await self._fetch(DUE, now, limit)]

    async def load(self, saga_ids: Sequence[str], *, lock: bool = True) -> Loaded:
        ids = sorted(set(saga_ids))
        if not ids:
            return Loaded()
        return await self._loaded(await self._fetch(LOAD_LOCKED if lock else LOAD_UNLOCKED, ids))

    async def _loaded(self, rows: Sequence[Any]) -> Loaded:
        """The sagas of a load's rows (head, then its events after the snapshot)."""
        loaded = Loaded()
        heads: dict[str, tuple[int, int]] = {}  # version, snapshot version
        events: dict[str, list[StoredEvent]] = {}
        for r in rows:
            if r[0] not in heads:
                heads[r[0]] = (r[1], r[2])
                events[r[0]] = []
            if r[3] is not None:
                events[r[0]].append(StoredEvent(r[0], r[3], r[4], r[5], r[6], r[7]))
        # A head this statement had to wait for is the committed one, but the events
        # came from the snapshot the statement began with, which may lack the events
        # the other writer committed meanwhile. Those sagas, and the ones with a
        # snapshot, are read again by the general path: its statements see the commit,
        # and the rows are locked already.
        again = [
            saga_id
            for saga_id, (version, snapped) in heads.items()
            if snapped or not events[saga_id] or events[saga_id][-1].seq != version
        ]
        if again:
            loaded = await self._store.load_on(self._conn, again, lock=False)
        for saga_id, (version, _) in heads.items():
            if saga_id not in loaded.states and saga_id not in loaded.broken:
                fold_into(loaded, saga_id, events[saga_id], None, version)
        return loaded


class PostgresSagaStore(SqlSagaStore):
    """A saga store in PostgreSQL; several processes may share it.

    Sagas being decided are row-locked (``FOR UPDATE``), due timers and outbox batches are
    claimed with ``FOR UPDATE SKIP LOCKED``, and each transaction that enqueued messages
    sends one NOTIFY, which wakes relays in every process at once.
    """

    row_locks = True
    unit_class = PostgresUnit
    conflicts = (IntegrityError, asyncpg.UniqueViolationError)

    def __init__(
        self,
        url: str,
        *,
        clock: Clock | None = None,
        snapshot_every: int = 50,
        pool_size: int = 10,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        # No pre-ping: SQLAlchemy's costs three round trips (BEGIN, a ping, ROLLBACK) per
        # checkout, that is per transaction. A connection that died (a restarted server)
        # fails its first statement instead; SQLAlchemy then drops every connection made
        # before it, and the unit's StoreError is retryable, so the work runs again.
        engine = create_async_engine(
            asyncpg_url(url),
            pool_size=pool_size,
            max_overflow=pool_size,
            connect_args={"server_settings": {**SESSION_SETTINGS, **(settings or {})}},
        )
        super().__init__(url, engine, insert=pg_insert, clock=clock, snapshot_every=snapshot_every)
        # With no clock given, deadlines come from the database: every orchestrator and
        # reaper process then measures time against the same clock.
        self.clock_from_database = clock is None
        self._clock_offset = 0.0
        self._clock_read_at = -math.inf
        self._listener = ChannelListener(
            make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        )

    def lock_skipping(self, query: Select[Any]) -> Select[Any]:
        return query.with_for_update(skip_locked=True)

    # The relay's claim says its two statements (the claim with its order check, and the
    # mark-sent) to asyncpg itself: a relay claims many times a second, and SQLAlchemy's
    # work on each was most of the claim's CPU.

    async def _claim_in_order(
        self,
        conn: AsyncConnection,
        limit: int,
        exclude: Sequence[int],
        older_than: float | None = None,
    ) -> tuple[list[OutboxRow], list[OutboxRow]]:
        # One statement: the claim, and the earliest unsent row of each claimed saga
        # for each destination.
        driver = await driver_of(conn)
        latest = math.inf if older_than is None else older_than
        found = await on_driver(self, conn, driver, CLAIM_OUTBOX, [list(exclude), limit, latest])
        rows = [
            OutboxRow(
                id=r[0],
                message=TransportMessage(r[2], r[1], r[5].encode(), json.loads(r[4])),
                saga_id=r[3],
                created_at=r[6],
            )
            for r in found
        ]
        return rows, in_saga_order(rows, {(r[3], r[2]): r[7] for r in found})

    async def _mark_sent(self, conn: AsyncConnection, ids: Sequence[int]) -> None:
        driver = await driver_of(conn)
        await on_driver(self, conn, driver, MARK_SENT, [list(ids), self.clock.now()])

    async def mark_sent_messages(self, message_ids: Sequence[str]) -> None:
        """One round trip and no wait for the disk (see MARK_SENT_MESSAGES): a
        publisher marks what was confirmed after every publish, off the path a saga
        waits on but on the same two cores, where a transaction of three round trips
        and a flushed commit per batch competed with the hops for them."""
        if not message_ids:
            return
        async with self._read() as conn:
            driver = await driver_of(conn)
            try:
                await driver.execute(MARK_SENT_MESSAGES, list(message_ids), self.clock.now())
            except DRIVER_ERRORS as exc:
                raise driver_error(self, exc) from exc

    def round_down(self, value: ColumnElement[Any]) -> ColumnElement[Any]:
        return func.floor(value)  # a CAST to integer would round to the nearest

    def among(self, column: Any, values: Sequence[Any]) -> ColumnElement[bool]:
        array = bindparam(
            f"among_{column.name}", list(values), type_=ARRAY(column.type), unique=True
        )
        return column == any_(array)  # type: ignore[no-any-return]

    async def database_now(self, conn: AsyncConnection) -> float:
        """The database's clock, read at most once a second: in between, this process's
        monotonic clock plus the offset last measured (a round trip a decision saved;
        the two drift apart by well under a millisecond a second)."""
        if not self.clock_from_database:
            return self.clock.now()
        here = time.monotonic()
        if here - self._clock_read_at > _CLOCK_REREAD:
            now = float(await conn.scalar(text("SELECT extract(epoch from clock_timestamp())")))
            after = time.monotonic()
            self._clock_offset = now - (here + after) / 2
            self._clock_read_at = after
            return now
        return here + self._clock_offset

    async def _notify(self, conn: AsyncConnection) -> None:
        await conn.execute(text(f"NOTIFY {OUTBOX_CHANNEL}"))

    async def _migration_lock(self, conn: AsyncConnection) -> None:
        await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('sagakit_migrate'))"))

    def _is_transient(self, exc: DBAPIError) -> bool:
        return getattr(exc.orig, "sqlstate", None) in TRANSIENT

    async def wait_for_outbox(self, timeout: float) -> None:
        await self._listener.listen(OUTBOX_CHANNEL, self._on_notify)
        await super().wait_for_outbox(timeout)

    async def _listen_for_ends(self) -> bool:
        return await self._listener.listen(ENDED_CHANNEL, self._on_ended)

    def _on_notify(self, *_args: Any) -> None:
        self._outbox_event.set()

    def _on_ended(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self.ends.saw(heard(payload))

    async def close(self) -> None:
        # The waiters' poller first: it may be adding a channel to the listening
        # connection, which must not be closed under it.
        await self.ends.close()
        await self._listener.close()
        await super().close()
