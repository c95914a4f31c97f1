"""The PostgreSQL store's unit of work: its hot statements sent to asyncpg itself, on the
transaction's connection, the rest through SQLAlchemy Core as :class:`SqlUnit` does."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sagakit.model.decision import Decision
from sagakit.model.events import StoredEvent
from sagakit.model.messages import Outgoing
from sagakit.ports import Loaded
from sagakit.stores.ends import announcements
from sagakit.stores.postgres_driver import (
    DRIVER_ERRORS,
    driver_error,
    driver_of,
    on_driver,
    positional,
)
from sagakit.stores.postgres_statements import (
    CLAIM,
    CLAIM_AND_LOAD,
    CLAIM_COMMANDS,
    DUE,
    LOAD_LOCKED,
    LOAD_UNLOCKED,
    MARK_SENT_BY_ID,
    REPLIES,
    SET_REPLIES,
    SET_REPLIES_FROM,
    bulk_insert,
    together,
)
from sagakit.stores.schema import saga_events, saga_outbox, saga_snapshots, sagas
from sagakit.stores.sql import fold_into
from sagakit.stores.unit import SqlUnit


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
