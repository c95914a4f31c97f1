"""The saga store over SQLAlchemy Core, shared by the SQLite and PostgreSQL adapters.

Every write the guarantees depend on goes through one unit, one local transaction
(:class:`sagakit.stores.unit.SqlUnit`): inbox claims, log appends, the projection,
snapshots and outbox rows. The store opens units and migrates; its facets load and
read sagas (:mod:`sagakit.stores.reads`, :mod:`sagakit.stores.findings`) and run the
outbox's claims (:mod:`sagakit.stores.outbox`). The adapters add what differs: how a
transaction begins, row locking, and wake-ups.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from sagakit.clock import SystemClock
from sagakit.errors import ConcurrencyError, StoreError
from sagakit.ports import Clock
from sagakit.stores import migrations
from sagakit.stores.ends import EndWatch
from sagakit.stores.findings import SagaFindings
from sagakit.stores.outbox import SqlOutbox, SqlOutboxClaim, in_saga_order
from sagakit.stores.reads import SagaReads, fold_into
from sagakit.stores.schema import VERSION_TABLE
from sagakit.stores.unit import InboxStatements, InsertFactory, SqlUnit

__all__ = ["SqlOutboxClaim", "SqlSagaStore", "fold_into", "in_saga_order"]


class SqlSagaStore(SagaReads, SqlOutbox, SagaFindings):
    """Shared implementation; use :class:`SqliteSagaStore` or :class:`PostgresSagaStore`.

    Its facets: loading and reading sagas (:class:`SagaReads`), the outbox
    (:class:`SqlOutbox`) and the operator's searches (:class:`SagaFindings`)."""

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
        super().__init__()  # the outbox's wake-ups
        self.url = url
        self.engine = engine
        self.insert = insert
        self.clock: Clock = clock or SystemClock()
        self.snapshot_every = snapshot_every
        self.statements = InboxStatements(insert)
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

    @asynccontextmanager
    async def unit(self) -> AsyncIterator[SqlUnit]:
        async with self._begin() as conn:
            unit = self.unit_class(self, conn)
            yield unit
            if unit.enqueued and self.wakes_relays and not unit.notified:
                await self._notify(conn)
        if unit.enqueued:
            self._outbox_committed(unit.outgoing)
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

    async def schema_problem(self) -> str | None:
        """Why this store cannot be used as it is (no sagakit tables, or tables at another
        migration than the code's), or None."""
        found = await self.schema_version()
        if found == migrations.HEAD:
            return None
        if found is None:
            return f"{self.url_safe} has no sagakit tables"
        return f"{self.url_safe} has sagakit's tables at migration {found}, not {migrations.HEAD}"

    async def close(self) -> None:
        await self.ends.close()
        await self.engine.dispose()


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
