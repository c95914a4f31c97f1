"""asyncpg beneath SQLAlchemy: the driver connection under a pooled one, statements sent
to it inside SQLAlchemy's transaction, and its errors as the store's."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.sql.sqltypes import NullType

from sagakit.errors import StoreError
from sagakit.stores.sql import SqlSagaStore

# SQLSTATEs worth retrying: serialization failure, deadlock, lock timeout, shutdown.
TRANSIENT = {"40001", "40P01", "55P03", "57P01", "57P02", "57P03", "08000", "08003", "08006"}

#: What asyncpg raises where SQLAlchemy would raise a DBAPIError.
DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


async def driver_of(conn: AsyncConnection) -> Any:
    """The asyncpg connection beneath ``conn``."""
    fairy = await conn.get_raw_connection()
    return fairy.driver_connection


async def on_driver(
    store: SqlSagaStore, conn: AsyncConnection, driver: Any, sql: str, args: Sequence[Any]
) -> list[Any]:
    """Run ``sql`` (``$n`` parameters) straight on asyncpg, inside ``conn``'s transaction;
    its errors as the store's."""
    try:
        if not driver.is_in_transaction() and not await begin_on(store, conn):
            # SQLAlchemy begins the transaction lazily, with the first statement it
            # sends; sent straight to the driver, this one would commit on its own.
            result = await conn.exec_driver_sql(sql, tuple(args))
            return list(result) if result.returns_rows else []
        return list(await driver.fetch(sql, *args))
    except asyncpg.UniqueViolationError:
        raise
    except DRIVER_ERRORS as exc:
        raise driver_error(store, exc) from exc


async def begin_on(store: SqlSagaStore, conn: AsyncConnection) -> bool:
    """Begin ``conn``'s transaction the way SQLAlchemy's asyncpg adapter does before
    its first statement (BEGIN, which the adapter then commits or rolls back with the
    connection); False where the adapter is not the one this knows.

    The first statement of every unit went through ``exec_driver_sql`` only to have
    SQLAlchemy send that BEGIN: its execution machinery cost more Python than the rest
    of a hop's statements together, on every hop."""
    adapter = getattr(conn.sync_connection, "connection", None)
    adapter = getattr(adapter, "dbapi_connection", None)
    start = getattr(adapter, "_start_transaction", None)
    mutex = getattr(adapter, "_execute_mutex", None)
    if start is None or mutex is None or getattr(adapter, "_transaction", False) is not None:
        return False
    try:
        async with mutex:
            if adapter._transaction is None:  # type: ignore[union-attr]
                await start()
    except BaseException as exc:
        # A BEGIN that failed or was cancelled leaves asyncpg holding a transaction the
        # adapter does not know, which would go back to the pool with the connection.
        # SQLAlchemy drops the connection then; so does this.
        with contextlib.suppress(Exception):
            await conn.invalidate()
        if isinstance(exc, Exception):
            raise driver_error(store, exc) from exc
        raise
    return True


def positional(statement: Any, dialect: Any) -> tuple[str, tuple[str, ...]] | None:
    """A plain ``text()`` statement as asyncpg's SQL (``$n``) and the names of its
    parameters in that order; None for anything whose parameters SQLAlchemy processes
    (typed or expanding ones) or that is not a ``text()``."""
    if not isinstance(statement, TextClause):
        return None
    found = _PLANS.get(statement.text)
    if found is not None and found[0] is statement:
        return found[1]
    plan: tuple[str, tuple[str, ...]] | None = None
    if all(isinstance(p.type, NullType) for p in statement._bindparams.values()):
        compiled = statement.compile(dialect=dialect)
        if not compiled._bind_processors and "POSTCOMPILE" not in compiled.string:
            plan = (compiled.string, tuple(compiled.positiontup or ()))
    if len(_PLANS) >= _MAX_PLANS:
        _PLANS.clear()
    _PLANS[statement.text] = (statement, plan)
    return plan


#: Plain text() writes already turned into asyncpg's form (positional), by their SQL.
_PLANS: dict[str, tuple[Any, tuple[str, tuple[str, ...]] | None]] = {}
_MAX_PLANS = 1024


def driver_error(store: SqlSagaStore, exc: BaseException) -> Exception:
    """An asyncpg error from a statement sent to the driver, as the store's other errors read."""
    error = StoreError(f"{store.url_safe}: {str(exc).strip().splitlines()[0] if str(exc) else exc}")
    error.retryable = (
        not isinstance(exc, asyncpg.PostgresError) or getattr(exc, "sqlstate", None) in TRANSIENT
    )
    return error
