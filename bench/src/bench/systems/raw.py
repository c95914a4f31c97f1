"""The raw limit: single-row commits through asyncpg, one per unit of work."""

from __future__ import annotations

from typing import Any

from bench import workload
from bench.databases import no_reset

_DDL = "CREATE TABLE IF NOT EXISTS bench_raw (id BIGINT PRIMARY KEY, item INT NOT NULL)"


class RawHarness:
    """Each submit is one autocommitted single-row INSERT: the ceiling a saga's commits
    are measured against."""

    def __init__(self, db: str, options: dict[str, Any]) -> None:
        self.url = db
        self.observer_transactions = 0
        self.pool: Any = None

    async def open(self, *, recover: bool) -> None:
        import asyncpg

        self.pool = await asyncpg.create_pool(self.url, min_size=4, max_size=30, reset=no_reset)
        await self.pool.execute(_DDL)

    async def submit(self, order: workload.Order) -> str:
        await self.pool.execute(
            "INSERT INTO bench_raw (id, item) VALUES ($1, $2)", order.id, order.item
        )
        return "committed"

    async def quiesce(self, timeout: float) -> int:
        return 0

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
