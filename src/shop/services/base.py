"""What every shop service has: its own store, its own tables, and a participant."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, ClassVar

from sqlalchemy import MetaData, inspect
from sqlalchemy.ext.asyncio import AsyncConnection

from sagakit import Participant
from sagakit.stores.sql import SqlSagaStore
from shop.world import World

if TYPE_CHECKING:
    from sagakit.engine.breakers import CircuitBreaker
    from shop.outside import OutsideSystems


class Service:
    """A service of the shop. Subclasses declare their tables and register handlers."""

    name: ClassVar[str]
    metadata: ClassVar[MetaData]

    def __init__(
        self,
        store: SqlSagaStore,
        *,
        fail_rate: float = 0.0,
        seed: int = 0,
        outside: OutsideSystems | None = None,
    ) -> None:
        self.store = store
        self.fail_rate = fail_rate
        self._seed = seed
        self.rng = random.Random(seed)  # noqa: S311 - seeded trouble for demos, not security
        self._outside = outside
        self.participant = Participant(
            self.name, store, service_log=f"shop.{self.name}", breakers=self.breakers()
        )
        self.register()

    @property
    def outside(self) -> OutsideSystems:
        """The outside systems this service calls (in-process ones unless it was given
        others)."""
        if self._outside is None:
            from shop.outside import OutsideSystems

            self._outside = OutsideSystems.connect(seed=self._seed)
        return self._outside

    def breakers(self) -> list[CircuitBreaker]:
        """The circuit breakers in front of the outside systems this service calls."""
        return []

    def register(self) -> None:
        """Register the participant's command handlers."""
        raise NotImplementedError

    async def install(self, world: World) -> None:
        """Create this service's tables and seed its share of the world, in one
        transaction: a crash leaves both or neither. A database from before a table was
        added gets the new table and keeps its data (it was seeded then)."""
        async with self.store.unit() as unit:
            seeded = await unit.connection.run_sync(
                lambda conn: any(inspect(conn).has_table(t) for t in self.metadata.tables)
            )
            await unit.connection.run_sync(self.metadata.create_all)
            if not seeded:
                await self.seed(unit.connection, world)

    async def seed(self, conn: AsyncConnection, world: World) -> None:
        """Put this service's share of the starting world into its tables."""

    async def is_seeded(self) -> bool:
        """Whether this service's tables exist (seeding happens with their creation)."""
        async with self.store.unit() as unit:
            return await unit.connection.run_sync(
                lambda conn: all(inspect(conn).has_table(t) for t in self.metadata.tables)
            )
