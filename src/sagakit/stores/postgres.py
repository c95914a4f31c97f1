"""The distributed store: PostgreSQL through asyncpg, with row locks and LISTEN/NOTIFY.

Its parts beside it: the unit of work (``postgres_unit``), the SQL said to asyncpg itself
(``postgres_statements``), asyncpg beneath SQLAlchemy (``postgres_driver``), the pool and
URLs (``postgres_connections``) and the LISTEN connection (``postgres_wakeups``).
"""

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
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from sagakit.model.messages import TransportMessage
from sagakit.ports import Clock, OutboxRow
from sagakit.stores.ends import ENDED_CHANNEL, heard
from sagakit.stores.postgres_connections import (
    SESSION_SETTINGS,
    asyncpg_url,
    driver_dsn,
    pool_from_url,
    pooled_engine,
)
from sagakit.stores.postgres_driver import (
    DRIVER_ERRORS,
    TRANSIENT,
    driver_error,
    driver_of,
    on_driver,
)
from sagakit.stores.postgres_statements import (
    CLAIM_OUTBOX,
    MARK_SENT,
    MARK_SENT_MESSAGES,
)
from sagakit.stores.postgres_unit import PostgresUnit
from sagakit.stores.postgres_wakeups import OUTBOX_CHANNEL, ChannelListener
from sagakit.stores.sql import SqlSagaStore, in_saga_order

#: Seconds between two reads of the database's clock (see database_now).
_CLOCK_REREAD = 1.0


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
        pool_size: int | None = None,
        max_overflow: int | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        # The pool: as given here, else as the URL's query says, else 10 connections and
        # as many again at a peak.
        url, from_url = pool_from_url(url)
        size = pool_size if pool_size is not None else from_url.get("pool_size", 10)
        overflow = max_overflow if max_overflow is not None else from_url.get("max_overflow", size)
        engine = pooled_engine(url, pool_size=size, max_overflow=overflow, settings=settings)
        super().__init__(url, engine, insert=pg_insert, clock=clock, snapshot_every=snapshot_every)
        # With no clock given, deadlines come from the database: every orchestrator and
        # reaper process then measures time against the same clock.
        self.clock_from_database = clock is None
        self._clock_offset = 0.0
        self._clock_read_at = -math.inf
        self._listener = ChannelListener(driver_dsn(url))

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


# The parts' names this module has always given, with its store.
__all__ = [
    "OUTBOX_CHANNEL",
    "SESSION_SETTINGS",
    "PostgresSagaStore",
    "PostgresUnit",
    "asyncpg_url",
]
