"""Choreography: the same kind of definitions run by events, no coordinator, faults on.

Only what choreography can do is generated for it (no timeouts, nothing that needs a
step's retry budget: a failed try is retried by redelivery), and optional steps never
run; the tracker writes each saga's log as the orchestrator would have.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sagakit import Runtime
from sagakit.engine.choreography import Choreography
from sagakit.testing import FaultyTransport
from sagakit.transports.memory import MemoryTransport
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
)
from tests.generative.runners.orchestrated import RETRY_TIERS
from tests.generative.scenario import (
    CHOREOGRAPHY_DELIVERIES,
    PARTICIPANTS,
    Family,
    SagaCase,
    Scenario,
)


@dataclass(frozen=True, slots=True)
class ChoreographyRunner:
    """Choreographed participants and a tracker on ``database``, in-process transport."""

    name: str
    database: Literal["sqlite", "postgres"]
    family: Family = Family.CHOREOGRAPHED

    async def run(
        self, scenario: Scenario, *, bound: float, plant: Plant | None = None
    ) -> Observation:
        seen = Observation(self.name)
        databases = Databases(scenario)
        try:
            store = await databases.shared(self.database)
            plans, participants = cast(scenario, dict.fromkeys(PARTICIPANTS, store), plant)
            choreography = Choreography(definitions(scenario))
            inner = MemoryTransport(retry_tiers=RETRY_TIERS, max_deliveries=CHOREOGRAPHY_DELIVERIES)
            runtime = Runtime(FaultyTransport(inner, faults(scenario)), relay_poll=0.05)
            runtime.add(choreography.tracker(store), *map(choreography.follow, participants))

            async def start(saga: SagaCase) -> str:
                return await choreography.start(
                    store, saga.definition, start_data(saga), saga_id=saga.saga_id
                )

            await drive(
                seen,
                runtime,
                start,
                store=store,
                scenario=scenario,
                plans=plans,
                bound=bound,
                dead_letters=inner.dead_letters,
            )
            await observe(seen, store, [store], scenario.sagas)
        finally:
            await databases.close()
        return seen


__all__ = ["ChoreographyRunner"]
