"""One local transaction of the SQL saga store: everything a guarantee depends on.

A :class:`SqlUnit` holds one connection inside one transaction. Inbox claims and
replies (its facet :class:`sagakit.stores.inbox.SqlInbox`), log appends, the projection,
snapshots and outbox rows all go through it, so they commit or roll back together (the
store, :mod:`sagakit.stores.sql`, opens units and answers everything read outside one).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from sagakit.errors import ConcurrencyError
from sagakit.model.decision import Decision
from sagakit.model.events import encode
from sagakit.model.messages import Outgoing, TransportMessage
from sagakit.model.state import SNAPSHOT_SCHEMA, SagaState, state_to_json
from sagakit.ports import Loaded, Records
from sagakit.stores.inbox import InboxStatements, InsertFactory, SqlInbox
from sagakit.stores.schema import saga_events, saga_outbox, saga_snapshots, sagas

if TYPE_CHECKING:
    from sagakit.stores.sql import SqlSagaStore

__all__ = ["Appended", "InboxStatements", "InsertFactory", "SqlUnit"]


@dataclass(slots=True)
class Appended:
    """What one ``append`` writes: rows per table, and the messages for the outbox."""

    idle: list[dict[str, Any]]
    changed: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    projection: list[dict[str, Any]] = field(default_factory=list)
    snapshotted: list[dict[str, Any]] = field(default_factory=list)
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    messages: list[Outgoing] = field(default_factory=list)

    def conflict(self) -> ConcurrencyError:
        ids = ", ".join(self.changed)
        return ConcurrencyError(f"another writer appended to saga(s) {ids} first")


class SqlUnit(SqlInbox):
    """One local transaction on one connection (its inbox claims: :class:`SqlInbox`)."""

    def __init__(self, store: SqlSagaStore, conn: AsyncConnection) -> None:
        self._store = store
        self._conn = conn
        self._now: float | None = None
        self._savepoints = 0
        self.enqueued = 0
        #: The messages this transaction wrote to the outbox, for publish on commit.
        self.outgoing: list[TransportMessage] = []
        #: Whether this transaction already told other processes about its outbox rows.
        self.notified = False
        #: (saga id, status) of the sagas this transaction ended, and those of them not
        #: yet announced to other processes (see sagakit.stores.ends).
        self.ended: list[tuple[str, str]] = []
        self.unannounced: list[tuple[str, str]] = []

    @property
    def connection(self) -> AsyncConnection:
        return self._conn

    @property
    def records(self) -> Records:
        return self.records_on(self._conn)

    def records_on(self, connection: Any) -> Records:
        from sagakit.stores.records import records_on

        return records_on(connection)

    async def now(self) -> float:
        if self._now is None:
            self._now = await self._store.database_now(self._conn)
        return self._now

    async def write_many(self, statement: Any, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run the write ``statement`` once for each of ``rows`` (an executemany)."""
        await self._conn.execute(statement, rows[0] if len(rows) == 1 else list(rows))

    async def claim_and_load(
        self, consumer: str, keys: Sequence[tuple[str, str]]
    ) -> tuple[set[str], Loaded]:
        fresh = await self.claim(consumer, [key for key, _ in keys])
        return fresh, await self.load([saga for key, saga in keys if key in fresh])

    async def load(self, saga_ids: Sequence[str], *, lock: bool = True) -> Loaded:
        return await self._store.load_on(self._conn, saga_ids, lock=lock)

    async def due(self, now: float, limit: int) -> list[str]:
        query = (
            select(sagas.c.saga_id)
            .where(sagas.c.wake_at <= now)
            .order_by(sagas.c.wake_at)
            .limit(limit)
        )
        result = await self._conn.execute(self._store.lock_skipping(query))
        return [row[0] for row in result]

    async def append(
        self,
        decisions: Sequence[Decision],
        *,
        sent: Sequence[str] = (),
        replies: Sequence[tuple[str, str, str]] = (),
    ) -> None:
        rows = self._appended(decisions)
        if replies:
            await self.set_replies(replies)
        if sent:
            await self._conn.execute(
                update(saga_outbox)
                .where(self._store.among(saga_outbox.c.message_id, list(sent)))
                .values(sent_at=await self.now())
            )
        # A decision without events still refreshes its projection: a saga woken early
        # (its wake time moved, a clock disagreed) must not be woken again and again.
        if rows.idle:
            await self._upsert(sagas, ["saga_id"], rows.idle, keep=["snapshot_version"])
        if not rows.events:
            return
        try:
            await self._insert(saga_events, rows.events)
        except self._store.conflicts as exc:
            raise rows.conflict() from exc
        if rows.projection:
            # snapshot_version is only written for new sagas here; it moves with a snapshot.
            await self._upsert(sagas, ["saga_id"], rows.projection, keep=["snapshot_version"])
        if rows.snapshotted:
            await self._upsert(sagas, ["saga_id"], rows.snapshotted)
            await self._upsert(saga_snapshots, ["saga_id"], rows.snapshots)
        await self.enqueue(rows.messages)

    def _appended(self, decisions: Sequence[Decision]) -> Appended:
        """The rows ``decisions`` add to each table; notes the sagas they end."""
        if len({d.state.saga_id for d in decisions}) != len(decisions):
            raise ValueError("one batch may carry only one decision per saga")
        rows = Appended(idle=[_projection(d.state, 0) for d in decisions if not d.events])
        every = self._store.snapshot_every
        for d in decisions:
            if not d.events:
                continue
            state = d.state
            if state.version != d.expected_version + len(d.events):
                raise ValueError(f"saga {state.saga_id}: decision does not match its state")
            rows.changed.append(state.saga_id)
            for offset, event in enumerate(d.events, start=1):
                kind, version, data = encode(event)
                rows.events.append(
                    {
                        "saga_id": state.saga_id,
                        "seq": d.expected_version + offset,
                        "type": kind,
                        "schema_version": version,
                        "data": data,
                        "recorded_at": d.recorded_at,
                    }
                )
            if every and state.version // every > d.expected_version // every:
                rows.snapshotted.append(_projection(state, state.version))
                rows.snapshots.append(
                    {
                        "saga_id": state.saga_id,
                        "version": state.version,
                        "schema": SNAPSHOT_SCHEMA,
                        "state": state_to_json(state),
                        "taken_at": d.recorded_at,
                    }
                )
            else:
                rows.projection.append(_projection(state, 0))
            rows.messages.extend(d.commands)
            if state.status.terminal:
                self.ended.append((state.saga_id, state.status.value))
                self.unannounced.append(self.ended[-1])
        return rows

    async def enqueue(
        self, messages: Sequence[Outgoing], *, replies: Sequence[tuple[str, str, str]] = ()
    ) -> None:
        await self.set_replies(replies)
        rows = self._outbox_rows(messages)
        if rows:
            await self._insert(saga_outbox, rows)
            self.enqueued += len(rows)

    def _outbox_rows(self, messages: Sequence[Outgoing]) -> list[dict[str, Any]]:
        now = self._store.clock.now()
        grace = self._store.publisher_grace
        relay_after = None if grace is None else now + grace
        rows = []
        for out in messages:
            wire = TransportMessage.of(out)
            self.outgoing.append(wire)
            rows.append(
                {
                    "message_id": wire.message_id,
                    "destination": wire.destination,
                    "saga_id": out.envelope.saga_id,
                    "type": out.envelope.type,
                    "headers": json.dumps(wire.headers),
                    "body": wire.body.decode(),
                    "created_at": now,
                    "sent_at": None,
                    "relay_after": relay_after,
                }
            )
        return rows

    async def quarantine(self, reasons: dict[str, str]) -> None:
        for saga_id, reason in reasons.items():
            await self._conn.execute(
                update(sagas)
                .where(sagas.c.saga_id == saga_id)
                .values(status="needs_attention", wake_at=None, deadline=None, reason=reason)
            )

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        # Plain SAVEPOINT / ROLLBACK TO rather than SQLAlchemy's nested transactions: a
        # participant opens one per command, and the bookkeeping cost as much Python as
        # the handler. It is never released: RELEASE would be one more round trip, and
        # the transaction's end releases it anyway. Its name is its nesting depth, not a
        # counter: ROLLBACK TO goes to the latest savepoint of that name, which at one
        # depth is this one, and a handful of names stay in the driver's statement cache
        # where a counter made every command prepare two new statements.
        self._savepoints += 1
        name = f"sagakit_sp{self._savepoints}"
        written = len(self.outgoing)  # what a rollback to here takes back from the outbox
        try:
            await self._conn.exec_driver_sql(f"SAVEPOINT {name}")
            try:
                yield
            except asyncio.CancelledError:
                # A statement cut off mid-flight may have broken the connection: then
                # the transaction rolls back whole, and the cancellation must go on.
                with contextlib.suppress(Exception):
                    await self._conn.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {name}")
                del self.outgoing[written:]
                raise
            except BaseException:
                await self._conn.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {name}")
                del self.outgoing[written:]
                raise
        finally:
            self._savepoints -= 1

    async def _insert(self, table: Any, rows: list[dict[str, Any]]) -> None:
        await self._conn.execute(table.insert(), rows)

    async def _upsert(
        self,
        table: Any,
        keys: list[str],
        rows: list[dict[str, Any]],
        *,
        keep: Sequence[str] = (),
    ) -> None:
        stmt = self._store.insert(table)
        columns = [c for c in rows[0] if c not in keys and c not in keep]
        stmt = stmt.on_conflict_do_update(
            index_elements=keys, set_={c: getattr(stmt.excluded, c) for c in columns}
        )
        await self._conn.execute(stmt, rows)


def _projection(state: SagaState, snapshot_version: int) -> dict[str, Any]:
    return {
        "saga_id": state.saga_id,
        "definition": state.definition,
        "definition_version": state.definition_version,
        "key": state.key,
        "status": state.status.value,
        "current_step": state.current_step,
        "deadline": state.deadline,
        "wake_at": state.wake_at,
        "version": state.version,
        "snapshot_version": snapshot_version,
        "created_at": state.started_at,
        "updated_at": state.updated_at,
        "reason": state.reason,
    }
