"""``Runtime``: an orchestrator and participants over a transport, faults on.

Three set-ups: the in-process transport with one SQLite store for everything (the
README's tour), the in-process transport with one PostgreSQL database for everything,
and RabbitMQ with a PostgreSQL database for the orchestrator and one per participant
(the distributed layout of ``sagakit up``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sagakit import Orchestrator, Runtime
from sagakit.ports import Transport
from sagakit.stores.sql import SqlSagaStore
from sagakit.testing import FaultyTransport
from sagakit.transports.memory import MemoryTransport
from tests.conftest import AMQP_URL, open_rabbit
from tests.generative.behaviours import start_data
from tests.generative.runners.base import (
    Databases,
    Observation,
    Plant,
    cast,
    definitions,
    drive,
    faults,
    observe,
    publish_rules,
)
from tests.generative.scenario import PARTICIPANTS, Family, SagaCase, Scenario

#: Redeliveries come quickly, so a batch that failed does not hold a run up.
RETRY_TIERS = (0.02, 0.05, 0.1)


@dataclass(frozen=True, slots=True)
class RuntimeRunner:
    """An orchestrated ``Runtime`` on ``database`` over ``transport``."""

    name: str
    transport: Literal["memory", "rabbitmq"]
    database: Literal["sqlite", "postgres"]
    #: "shared": one store for all; "apart": one for the sagas, one per participant.
    layout: Literal["shared", "apart"] = "shared"
    family: Family = Family.ORCHESTRATED

    async def run(
        self, scenario: Scenario, *, bound: float, plant: Plant | None = None
    ) -> Observation:
        seen = Observation(self.name)
        databases = Databases(scenario)
        rabbit = None
        try:
            saga_store, stores = await self._stores(databases)
            await publish_rules(saga_store, scenario)
            if self.transport == "rabbitmq":
                rabbit = await open_rabbit(AMQP_URL, retry_tiers=RETRY_TIERS, max_deliveries=6)
                inner: Transport = rabbit
            else:
                inner = MemoryTransport(retry_tiers=RETRY_TIERS, max_deliveries=6)
            plans, participants = cast(scenario, stores, plant)
            orchestrator = Orchestrator(saga_store, definitions(scenario))
            transport = FaultyTransport(inner, faults(scenario))
            runtime = Runtime(transport, relay_poll=0.05, timer_interval=0.05)
            runtime.add(orchestrator, *participants)

            async def start(saga: SagaCase) -> str:
                return await orchestrator.start(
                    saga.definition, start_data(saga), saga_id=saga.saga_id
                )

            await drive(
                seen,
                runtime,
                start,
                store=saga_store,
                scenario=scenario,
                plans=plans,
                bound=bound,
                dead_letters=inner.dead_letters,
            )
            await observe(seen, saga_store, stores.values(), scenario.sagas)
        finally:
            if rabbit is not None:
                await rabbit.teardown()
                await rabbit.close()
            await databases.close()
        return seen

    async def _stores(self, databases: Databases) -> tuple[SqlSagaStore, dict[str, SqlSagaStore]]:
        if self.layout == "shared":
            shared = await databases.shared(self.database)
            return shared, dict.fromkeys(PARTICIPANTS, shared)
        saga_store = await databases.open(self.database, "sagas")
        stores = {name: await databases.open(self.database, name, [name]) for name in PARTICIPANTS}
        return saga_store, stores


__all__ = ["RuntimeRunner"]
