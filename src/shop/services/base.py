"""What every shop service has: its own store, its own tables, and a participant."""

from __future__ import annotations

import random
from typing import ClassVar

from sqlalchemy import MetaData, inspect
from sqlalchemy.ext.asyncio import AsyncConnection

from sagakit import Participant
from sagakit.stores.sql import SqlSagaStore
from shop.world import World


class Service:
    """A service of the shop. Subclasses declare their tables and register handlers."""

    name: ClassVar[str]
    metadata: ClassVar[MetaData]

    def __init__(self, store: SqlSagaStore, *, fail_rate: float = 0.0, seed: int = 0) -> None:
        self.store = store
        self.fail_rate = fail_rate
        self.rng = random.Random(seed)  # noqa: S311 - seeded trouble for demos, not security
        self.participant = Participant(self.name, store, service_log=f"shop.{self.name}")
        self.register()

    def register(self) -> None:
        """Register the participant's command handlers."""
        raise NotImplementedError

    async def install(self, world: World) -> None:
        """Create this service's tables and seed its share of the world, in one
        transaction: a crash leaves both or neither."""
        async with self.store.unit() as unit:
            await unit.connection.run_sync(self.metadata.create_all)
            await self.seed(unit.connection, world)

    async def seed(self, conn: AsyncConnection, world: World) -> None:
        """Put this service's share of the starting world into its tables."""

    async def is_seeded(self) -> bool:
        """Whether this service's tables exist (seeding happens with their creation)."""
        async with self.store.unit() as unit:
            return await unit.connection.run_sync(
                lambda conn: all(inspect(conn).has_table(t) for t in self.metadata.tables)
            )
