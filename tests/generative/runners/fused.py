"""``Runtime.fuse``: the orchestrator and every participant on one store, one
transaction a step, many sagas' steps to a transaction. There is no transport, so no
message faults: what mixes here is the batches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sagakit import Orchestrator, Runtime
from tests.generative.behaviours import start_data
from tests.generative.runners.base import (
    Databases,
    Observation,
    Plant,
    cast,
    definitions,
    drive,
    observe,
    publish_rules,
)
from tests.generative.scenario import PARTICIPANTS, Family, SagaCase, Scenario


@dataclass(frozen=True, slots=True)
class FusedRunner:
    """The fused runtime on ``database``, with its default two workers."""

    name: str
    database: Literal["sqlite", "postgres"]
    family: Family = Family.ORCHESTRATED

    async def run(
        self, scenario: Scenario, *, bound: float, plant: Plant | None = None
    ) -> Observation:
        seen = Observation(self.name)
        databases = Databases(scenario)
        try:
            store = await databases.shared(self.database)
            await publish_rules(store, scenario)
            plans, participants = cast(scenario, dict.fromkeys(PARTICIPANTS, store), plant)
            orchestrator = Orchestrator(store, definitions(scenario))
            fused = Runtime(timer_interval=0.05).fuse(orchestrator, *participants)

            async def start(saga: SagaCase) -> str:
                return await orchestrator.start(
                    saga.definition, start_data(saga), saga_id=saga.saga_id
                )

            await drive(
                seen, fused, start, store=store, scenario=scenario, plans=plans, bound=bound
            )
            await observe(seen, store, [store], scenario.sagas)
        finally:
            await databases.close()
        return seen


__all__ = ["FusedRunner"]
