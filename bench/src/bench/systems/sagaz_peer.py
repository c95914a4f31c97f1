"""sagaz (PyPI ``sagaz``): the order saga as a declarative ``Saga`` with its PostgreSQL
storage.

Steps run in order through ``depends_on``; ``ship`` is the pivot. Each business write is
its own autocommitted statement on an asyncpg pool (sagaz gives a step no transaction
of its own to share). sagaz persists a saga's state when it starts and when it ends;
it records no step progress ("TODO: Track steps" in its engine) and has no way to
resume a saga after a crash, so its crash recovery is: start the process again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

from bench import workload
from bench.databases import no_reset

Method = Callable[[Any, dict[str, Any]], Awaitable[None]]


class SagazHarness:
    def __init__(self, db: str, options: dict[str, Any]) -> None:
        self.url = db
        self.observer_transactions = 0
        self.pool: Any = None
        self.config: Any = None

    async def open(self, *, recover: bool) -> None:
        import logging

        import asyncpg
        from sagaz import SagaConfig
        from sagaz.core.storage.postgresql import PostgreSQLSagaStorage

        logging.getLogger("sagaz").setLevel(logging.ERROR)
        self.pool = await asyncpg.create_pool(self.url, min_size=2, max_size=15, reset=no_reset)
        storage = PostgreSQLSagaStorage(self.url, pool_min_size=2, pool_max_size=10)
        self.storage = storage
        self.config = SagaConfig(storage=storage, metrics=False, logging=False, tracing=False)
        self.saga_class = _saga_class(self.pool)

    async def submit(self, order: workload.Order) -> str:
        saga = self.saga_class(config=self.config)
        context = order.params() | {"fails": order.fails}
        try:
            await saga.run(context, saga_id=f"order-{order.id}")
        except Exception as exc:
            if "shipment refused" in str(exc):
                return "rejected"
            raise
        return "approved"

    async def quiesce(self, timeout: float) -> int:
        # Nothing resumes: what was executing when the process died stays so.
        async with self.pool.acquire() as conn:
            left = await conn.fetchval("SELECT COUNT(*) FROM sagas WHERE status = 'executing'")
        self.observer_transactions += 1
        return int(left or 0)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
        pool = getattr(self.storage, "_pool", None)
        if pool is not None:
            await pool.close()


def _saga_class(pool: Any) -> Any:
    from sagaz import Saga
    from sagaz import action as untyped_action
    from sagaz import compensate as untyped_compensate

    # sagaz's decorators carry no types; these say what they do (return the method).
    action = cast(Callable[..., Callable[[Method], Method]], untyped_action)
    compensate = cast(Callable[..., Callable[[Method], Method]], untyped_compensate)

    async def write(sql: str, ctx: dict[str, Any]) -> None:
        statement, values = workload.positional(sql, ctx)
        await pool.execute(statement, *values)

    class OrderSaga(Saga):  # type: ignore[misc]
        saga_name = "order"

        @action("pending")
        async def pending(self, ctx: dict[str, Any]) -> None:
            await write(workload.SET_PENDING, ctx)

        @compensate("pending")
        async def reject(self, ctx: dict[str, Any]) -> None:
            await write(workload.REJECT, ctx)

        @action("reserve", depends_on=["pending"])
        async def reserve(self, ctx: dict[str, Any]) -> None:
            await write(workload.RESERVE, ctx)

        @compensate("reserve")
        async def release(self, ctx: dict[str, Any]) -> None:
            await write(workload.RELEASE, ctx)

        @action("charge", depends_on=["reserve"])
        async def charge(self, ctx: dict[str, Any]) -> None:
            await write(workload.CHARGE, ctx)

        @compensate("charge")
        async def refund(self, ctx: dict[str, Any]) -> None:
            await write(workload.REFUND, ctx)

        @action("ship", depends_on=["charge"])
        async def ship(self, ctx: dict[str, Any]) -> None:
            if ctx["fails"]:
                raise workload.ShipmentRefused("shipment refused")
            await write(workload.SHIP, ctx)

        @action("approve", depends_on=["ship"])
        async def approve(self, ctx: dict[str, Any]) -> None:
            await write(workload.APPROVE, ctx)

    return OrderSaga
