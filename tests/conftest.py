"""Fixtures shared by every test: stores on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

from sagakit.stores import open_store
from sagakit.stores.sql import SqlSagaStore

if TYPE_CHECKING:
    from sagakit.transports.rabbitmq import RabbitTransport

AMQP_URL = os.environ.get("SAGAKIT_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/%2F")
PG_ADMIN = os.environ.get("SAGAKIT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def unavailable(what: str, why: object) -> None:
    """Skip when a server is down on a developer's machine; fail in CI."""
    if IN_CI:
        pytest.fail(f"{what} is unreachable and CI=true: {why}")
    pytest.skip(f"{what} is unreachable: {why}")


async def create_pg_database() -> str:
    import asyncpg

    name = f"sagakit_test_{uuid.uuid4().hex[:12]}"
    try:
        conn = await asyncpg.connect(PG_ADMIN, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        unavailable("PostgreSQL", exc)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name


async def drop_pg_database(url: str) -> None:
    import asyncpg

    name = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(PG_ADMIN, timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    url = await create_pg_database()
    yield url
    await drop_pg_database(url)


@pytest.fixture
def sqlite_url(tmp_path: object) -> str:
    return f"sqlite:///{tmp_path}/saga.db"


@pytest.fixture(params=["sqlite", "postgres"])
async def store_url(request: pytest.FixtureRequest, tmp_path: object) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/saga.db"
        return
    url = await create_pg_database()
    yield url
    await drop_pg_database(url)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[SqlSagaStore]:
    opened = open_store(store_url, snapshot_every=10)
    await opened.migrate()
    yield opened
    await opened.close()


async def open_rabbit(url: str = AMQP_URL, **options: object) -> RabbitTransport:
    """A started RabbitTransport under a prefix of its own (tests tear it down); skips, or
    fails in CI, when the broker is unreachable."""
    from sagakit.errors import TransportError
    from sagakit.transports.rabbitmq import RabbitTransport

    settings: dict[str, object] = {"retry_tiers": (0.05, 0.1, 0.2), "max_deliveries": 3}
    settings.update(options)
    prefix = str(settings.pop("prefix", f"sagakit-test-{uuid.uuid4().hex[:10]}."))
    transport = RabbitTransport(
        url,
        prefix=prefix,
        connect_timeout=5,
        **settings,  # type: ignore[arg-type]
    )
    try:
        await transport.start()
    except TransportError as exc:
        unavailable("RabbitMQ", exc)
    return transport


@pytest.fixture
def amqp_url() -> str:
    return AMQP_URL


@pytest.fixture
async def rabbit(amqp_url: str) -> AsyncIterator[RabbitTransport]:
    transport = await open_rabbit(amqp_url)
    try:
        yield transport
    finally:
        await transport.teardown()
        await transport.close()
