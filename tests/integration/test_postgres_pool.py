"""A PostgreSQL store's connection pool is sized where the database is named: in the
URL's query, so a deployment that runs many processes against one server keeps within
its ``max_connections`` without code."""

from __future__ import annotations

import asyncio

import pytest

from sagakit import open_store
from sagakit.stores.postgres import PostgresSagaStore


async def test_the_url_sizes_the_pool_and_the_driver_never_sees_it(pg_url: str) -> None:
    store = open_store(f"{pg_url}?pool_size=2&max_overflow=1")
    assert isinstance(store, PostgresSagaStore)
    try:
        await store.migrate()  # the driver would refuse pool_size as a server setting
        assert "pool_size" not in store.url
        pool = store.engine.pool
        assert (pool.size(), pool._max_overflow) == (2, 1)  # type: ignore[attr-defined]
        # Three units at once take every connection the URL allows, and a fourth waits.
        entered = asyncio.Event()
        release = asyncio.Event()
        inside = 0

        async def hold() -> None:
            nonlocal inside
            async with store.unit() as unit:
                await unit.connection.exec_driver_sql("SELECT 1")
                inside += 1
                if inside == 3:
                    entered.set()
                await release.wait()

        holders = [asyncio.create_task(hold()) for _ in range(4)]
        await asyncio.wait_for(entered.wait(), 10)
        await asyncio.sleep(0.2)
        assert inside == 3
        release.set()
        await asyncio.gather(*holders)
        assert inside == 4
    finally:
        await store.close()


async def test_the_constructor_overrides_the_url(pg_url: str) -> None:
    store = PostgresSagaStore(f"{pg_url}?pool_size=2", pool_size=5)
    try:
        assert (store.engine.pool.size(), store.engine.pool._max_overflow) == (5, 5)  # type: ignore[attr-defined]
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("pool_size=0", "pool_size='0'"),
        ("pool_size=many", "pool_size='many'"),
        ("max_overflow=-1", "max_overflow='-1'"),
    ],
)
def test_a_pool_size_that_is_not_a_count_is_refused_by_name(query: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        open_store(f"postgresql://127.0.0.1/nowhere?{query}")


async def test_the_shop_passes_the_pool_size_to_every_store(pg_url: str) -> None:
    """``sagakit up --db URL?pool_size=...``: the shop's databases are made over an admin
    connection that does not take the query, and every store's URL keeps it."""
    import asyncpg
    from sqlalchemy.engine import make_url

    from sagakit_shop.distributed import create_databases, database_urls

    base = f"{pg_url}?pool_size=2&max_overflow=0"
    made = await create_databases(base)
    try:
        assert len(made) == len(database_urls(base))
        for url in database_urls(base).values():
            store = open_store(url)
            try:
                await store.migrate()
                assert store.engine.pool.size() == 2
            finally:
                await store.close()
    finally:
        admin = make_url(pg_url).set(database="postgres").render_as_string(hide_password=False)
        conn = await asyncpg.connect(admin)
        try:
            for name in made:
                await conn.execute(f'DROP DATABASE "{name}"')
        finally:
            await conn.close()
