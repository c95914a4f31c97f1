"""The distributed store: PostgreSQL through asyncpg, with row locks and LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from sqlalchemy import Select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from sagakit.ports import Clock
from sagakit.stores.sql import SqlSagaStore

#: The channel committing transactions notify when they wrote outbox rows.
OUTBOX_CHANNEL = "sagakit_outbox"

# SQLSTATEs worth retrying: serialization failure, deadlock, lock timeout, shutdown.
_TRANSIENT = {"40001", "40P01", "55P03", "57P01", "57P02", "57P03", "08000", "08003", "08006"}


def asyncpg_url(url: str) -> str:
    """``postgresql://...`` as SQLAlchemy's asyncpg URL."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


class PostgresSagaStore(SqlSagaStore):
    """A saga store in PostgreSQL; several processes may share it.

    Sagas being decided are row-locked (``FOR UPDATE``), due timers and outbox batches are
    claimed with ``FOR UPDATE SKIP LOCKED``, and each transaction that enqueued messages
    sends one NOTIFY, which wakes relays in every process at once.
    """

    row_locks = True

    def __init__(
        self,
        url: str,
        *,
        clock: Clock | None = None,
        snapshot_every: int = 50,
        pool_size: int = 10,
    ) -> None:
        engine = create_async_engine(
            asyncpg_url(url), pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
        )
        super().__init__(url, engine, insert=pg_insert, clock=clock, snapshot_every=snapshot_every)
        # With no clock given, deadlines come from the database: every orchestrator and
        # reaper process then measures time against the same clock.
        self.clock_from_database = clock is None
        self._listener: Any = None
        self._listen_lock = asyncio.Lock()

    def lock_skipping(self, query: Select[Any]) -> Select[Any]:
        return query.with_for_update(skip_locked=True)

    async def database_now(self, conn: AsyncConnection) -> float:
        if not self.clock_from_database:
            return self.clock.now()
        now = await conn.scalar(text("SELECT extract(epoch from clock_timestamp())"))
        return float(now)

    async def _notify(self, conn: AsyncConnection) -> None:
        await conn.execute(text(f"NOTIFY {OUTBOX_CHANNEL}"))

    async def _migration_lock(self, conn: AsyncConnection) -> None:
        await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('sagakit_migrate'))"))

    def _is_transient(self, exc: DBAPIError) -> bool:
        return getattr(exc.orig, "sqlstate", None) in _TRANSIENT

    async def wait_for_outbox(self, timeout: float) -> None:
        await self._listen()
        await super().wait_for_outbox(timeout)

    async def _listen(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            return
        async with self._listen_lock:
            if self._listener is not None and not self._listener.is_closed():
                return
            import asyncpg

            dsn = make_url(self.url).set(drivername="postgresql")
            try:
                self._listener = await asyncpg.connect(dsn.render_as_string(hide_password=False))
                await self._listener.add_listener(OUTBOX_CHANNEL, self._on_notify)
            except (OSError, asyncpg.PostgresError):
                self._listener = None  # polling still runs; try LISTEN again next time

    def _on_notify(self, *_args: Any) -> None:
        self._outbox_event.set()

    async def close(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
            self._listener = None
        await super().close()
