"""The embedded default: the saga store in one SQLite file (WAL, one writer at a time)."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from sagakit.ports import Clock
from sagakit.stores.sql import SqlSagaStore

_READ = "sagakit_read"

#: The store whose first-use migration this task is running: its own connections must
#: not wait for the migration they are part of.
_MIGRATING: contextvars.ContextVar[object | None] = contextvars.ContextVar(
    "sagakit_sqlite_migrating", default=None
)


class SqliteSagaStore(SqlSagaStore):
    """A saga store in a SQLite file.

    Writers queue on an in-process lock and then ``BEGIN IMMEDIATE``, so a transaction
    never has to upgrade a read lock (the classic SQLite deadlock) and the event loop
    never waits on a busy file. ``synchronous=NORMAL`` in WAL mode survives a killed
    process, which is the crash embedded mode promises to survive.
    """

    row_locks = False

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Clock | None = None,
        snapshot_every: int = 50,
        auto_migrate: bool = True,
    ) -> None:
        self.path = Path(path)
        self.auto_migrate = auto_migrate
        self._migrated = False
        self._migrating = asyncio.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(f"sqlite+aiosqlite:///{self.path}", pool_size=8)
        sync_engine = engine.sync_engine

        @event.listens_for(sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Let BEGIN below, not the driver, decide when transactions start.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            for pragma in (
                "journal_mode=WAL",
                "synchronous=NORMAL",
                "busy_timeout=30000",
                "foreign_keys=ON",
            ):
                cursor.execute(f"PRAGMA {pragma}")
            cursor.close()

        @event.listens_for(sync_engine, "begin")
        def _on_begin(conn: Any) -> None:
            reading = conn.get_execution_options().get(_READ, False)
            conn.exec_driver_sql("BEGIN" if reading else "BEGIN IMMEDIATE")

        super().__init__(
            f"sqlite:///{self.path}",
            engine,
            insert=sqlite_insert,
            clock=clock,
            snapshot_every=snapshot_every,
        )
        self._write_lock = asyncio.Lock()

    @property
    def migrates_itself(self) -> bool:
        return self.auto_migrate

    async def _ensure_migrated(self) -> None:
        """Embedded mode migrates on first use, so a new file just works."""
        if self._migrated or not self.auto_migrate or _MIGRATING.get() is self:
            return
        async with self._migrating:  # everyone else waits until the tables exist
            if self._migrated:
                return
            token = _MIGRATING.set(self)
            try:
                if not await self.is_migrated():
                    await self.migrate()
                self._migrated = True
            finally:
                _MIGRATING.reset(token)

    async def migrate(self) -> None:
        token = _MIGRATING.set(self)  # its own connections need no first-use migration
        try:
            await super().migrate()
            self._migrated = True
        finally:
            _MIGRATING.reset(token)

    @asynccontextmanager
    async def _open_write(self) -> AsyncIterator[AsyncConnection]:
        await self._ensure_migrated()
        async with self._write_lock, self.engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def _open_read(self) -> AsyncIterator[AsyncConnection]:
        await self._ensure_migrated()
        async with self.engine.connect() as conn:
            await conn.execution_options(**{_READ: True})
            yield conn

    def _is_transient(self, exc: Any) -> bool:
        return "locked" in str(exc.orig).lower() or "busy" in str(exc.orig).lower()
