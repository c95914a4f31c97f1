"""DBOS (PyPI ``dbos``): the order saga as a workflow of steps.

Each business write is a DBOS datasource transaction (``@ds.transaction``), DBOS's own
way to make a database step exactly-once: the write and the step's recorded output
commit together. The system database and the business tables share this system's
database, so every commit DBOS makes is counted. Recovery is DBOS's own: launching
again resumes every workflow left pending.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url

from bench import workload

Step = Callable[[dict[str, Any]], Awaitable[None]]


class DBOSHarness:
    def __init__(self, db: str, options: dict[str, Any]) -> None:
        self.url = db
        self.observer_transactions = 0
        self.workflow: Callable[[dict[str, Any]], Awaitable[str]] | None = None

    async def open(self, *, recover: bool) -> None:
        import logging

        from dbos import DBOS, AsyncSQLAlchemyDatasource

        logging.getLogger("dbos").setLevel(logging.ERROR)
        psycopg = make_url(self.url).set(drivername="postgresql+psycopg")
        DBOS(
            config={
                "name": "bench",
                "system_database_url": psycopg.render_as_string(hide_password=False),
                "sys_db_pool_size": 15,
                "log_level": "ERROR",
            }
        )
        ds = await AsyncSQLAlchemyDatasource.create(
            psycopg.render_as_string(hide_password=False),
            engine_kwargs={"pool_size": 15, "max_overflow": 0},
        )

        def transaction(name: str, sql: str, *, refuse: bool = False) -> Step:
            statement = text(sql)

            async def body(order: dict[str, Any]) -> None:
                if refuse and order["fails"]:
                    raise workload.ShipmentRefused(f"order {order['id']}: shipment refused")
                await ds.sql_session().execute(statement, order)

            body.__name__ = body.__qualname__ = name
            step: Step = ds.transaction(name=name, isolation_level="READ COMMITTED")(body)
            return step

        set_pending = transaction("set_pending", workload.SET_PENDING)
        reserve = transaction("reserve", workload.RESERVE)
        charge = transaction("charge", workload.CHARGE)
        ship = transaction("ship", workload.SHIP, refuse=True)
        approve = transaction("approve", workload.APPROVE)
        refund = transaction("refund", workload.REFUND)
        release = transaction("release", workload.RELEASE)
        reject = transaction("reject", workload.REJECT)

        @DBOS.workflow(name="order_saga")
        async def order_saga(order: dict[str, Any]) -> str:
            await set_pending(order)
            await reserve(order)
            await charge(order)
            try:
                await ship(order)
            except workload.ShipmentRefused:
                await refund(order)
                await release(order)
                await reject(order)
                return "rejected"
            await approve(order)
            return "approved"

        self.workflow = order_saga
        self.ds = ds
        # Launched from this event loop, DBOS adopts it: the workflows it recovers run
        # here, beside the datasource's pool, instead of on its background loop.
        DBOS.launch()

    async def submit(self, order: workload.Order) -> str:
        from dbos import SetWorkflowID

        assert self.workflow is not None
        params = order.params() | {"fails": order.fails}
        with SetWorkflowID(f"order-{order.id}"):
            return await self.workflow(params)

    async def quiesce(self, timeout: float) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            async with self.ds.engine.connect() as conn:
                left = await conn.scalar(
                    text(
                        "SELECT COUNT(*) FROM dbos.workflow_status "
                        "WHERE status IN ('PENDING', 'ENQUEUED')"
                    )
                )
            self.observer_transactions += 1
            if not left or loop.time() > deadline:
                return int(left or 0)
            await asyncio.sleep(0.2)

    async def close(self) -> None:
        from dbos import DBOS

        await asyncio.to_thread(DBOS.destroy)
