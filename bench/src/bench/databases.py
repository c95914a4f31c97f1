"""Fresh databases for each system, seeding, invariant queries and commit counters."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from bench import workload


def database_url(admin: str, name: str) -> str:
    """``admin``'s server, database ``name``, as a plain ``postgresql://`` URL."""
    url = make_url(admin).set(drivername="postgresql", database=name)
    return url.render_as_string(hide_password=False)


def _plain(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextlib.asynccontextmanager
async def connect(url: str) -> AsyncIterator[Any]:
    import asyncpg

    conn = await asyncpg.connect(_plain(url), timeout=10)
    try:
        yield conn
    finally:
        await conn.close()


async def no_reset(_connection: Any) -> None:
    """An asyncpg pool ``reset`` that does nothing. The default runs one more statement
    (a transaction of its own) each time a connection goes back to the pool, which would
    double every single-row commit the bench's own pools make. Nothing here leaves
    session state behind."""


async def create(admin: str, name: str) -> str:
    async with connect(admin) as conn:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    return database_url(admin, name)


async def drop(admin: str, name: str) -> None:
    async with connect(admin) as conn:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def drop_prefixed(admin: str, prefix: str) -> list[str]:
    """Drop every database whose name starts with ``prefix`` (a run's leftovers)."""
    async with connect(admin) as conn:
        rows = await conn.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE $1", prefix + "%"
        )
        names = [str(r[0]) for r in rows]
        for name in names:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return names


async def install(url: str) -> None:
    """The business tables and the stock, in a fresh PostgreSQL database."""
    async with connect(url) as conn:
        for stmt in workload.schema("postgresql"):
            await conn.execute(stmt)
        await conn.executemany(
            "INSERT INTO bench_stock (item, available, initial) VALUES ($1, $2, $2)",
            [(i, workload.INITIAL_STOCK) for i in range(workload.ITEMS)],
        )


async def seed_orders(url: str, seed: int, first: int, count: int) -> None:
    """Orders ``first .. first+count-1`` in status ``new``, as the plan makes them."""
    records = [
        (o.id, o.item, o.qty, o.amount, o.fails, "new")
        for o in (workload.plan(seed, i) for i in range(first, first + count))
    ]
    async with connect(url) as conn:
        await conn.copy_records_to_table(
            "bench_orders",
            records=records,
            columns=["id", "item", "qty", "amount", "fails", "status"],
        )


async def analyze(url: str) -> None:
    """Fresh statistics for every table, as a database some minutes old would have."""
    async with connect(url) as conn:
        await conn.execute("ANALYZE")


async def check(url: str) -> workload.Verdict:
    async with connect(url) as conn:

        async def query(sql: str) -> Sequence[Sequence[Any]]:
            return [tuple(r) for r in await conn.fetch(sql)]

        return await workload.check(query)


async def commits(admin: str, names: Sequence[str]) -> int:
    """``xact_commit`` summed over these databases (the statistics lag up to a second)."""
    async with connect(admin) as conn:
        value = await conn.fetchval(
            "SELECT COALESCE(SUM(xact_commit), 0) FROM pg_stat_database "
            "WHERE datname = ANY($1::text[])",
            list(names),
        )
    return int(value)


# SQLite, for the embedded mode: the business tables share the saga store's file.


def sqlite_install(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        for stmt in workload.schema("sqlite"):
            conn.execute(stmt)
        conn.executemany(
            "INSERT INTO bench_stock (item, available, initial) VALUES (?, ?, ?)",
            [(i, workload.INITIAL_STOCK, workload.INITIAL_STOCK) for i in range(workload.ITEMS)],
        )
        conn.commit()


def sqlite_seed_orders(path: Path, seed: int, first: int, count: int) -> None:
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn:
        conn.executemany(
            "INSERT INTO bench_orders (id, item, qty, amount, fails, status) "
            "VALUES (?, ?, ?, ?, ?, 'new')",
            [
                (o.id, o.item, o.qty, o.amount, o.fails)
                for o in (workload.plan(seed, i) for i in range(first, first + count))
            ],
        )
        conn.commit()


async def sqlite_check(path: Path) -> workload.Verdict:
    def run() -> workload.Verdict:
        with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn:

            async def query(sql: str) -> Sequence[Sequence[Any]]:
                return conn.execute(sql).fetchall()

            return asyncio.run(workload.check(query))

    return await asyncio.to_thread(run)
