"""An orchestrator's timers: the sagas whose retry or deadline is due, decided in one
unit of work, and the loop a runtime runs to keep firing them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING

from sagakit.model.decision import Decision
from sagakit.model.triggers import Tick
from sagakit.observe.logs import get_logger
from sagakit.ports import UnitOfWork

if TYPE_CHECKING:
    from sagakit.engine.orchestrator import Orchestrator

log = get_logger("sagakit.orchestrator")


async def decide_due(
    orchestrator: Orchestrator, unit: UnitOfWork, limit: int, held: Collection[str] = ()
) -> list[Decision]:
    """Decide a tick for up to ``limit`` sagas due now, leaving ``held`` alone, in
    ``unit``; a saga whose log cannot be read is quarantined. The orchestrator beats
    its heartbeat here (:mod:`sagakit.engine.liveness`)."""
    now = await orchestrator.now_in(unit)
    await orchestrator.heartbeat.beat(unit.records.heartbeats)
    ids = await unit.due(now, limit + len(held))
    if held:
        ids = [saga_id for saga_id in ids if saga_id not in held][:limit]
    if not ids:
        return []
    loaded = await unit.load(ids)
    for saga_id, broken in loaded.broken.items():
        log.error(f"cannot fire timers: {broken}", saga_id=saga_id)
    if loaded.broken:
        await unit.quarantine({sid: str(err) for sid, err in loaded.broken.items()})
    decisions = []
    for state in loaded.states.values():
        try:
            definition = orchestrator.definition(state.definition, state.definition_version)
        except LookupError:
            continue  # another orchestrator group owns this definition
        decisions.append(await orchestrator.decide_in(unit, definition, state, Tick(), now=now))
    await unit.append(decisions)
    return decisions


def timer_loop(orchestrator: Orchestrator, interval: float) -> Callable[[], Awaitable[None]]:
    """Fire ``orchestrator``'s timers for as long as it runs, resting ``interval``
    seconds whenever nothing was due."""

    async def loop() -> None:
        while True:
            if await orchestrator.tick() == 0:
                await asyncio.sleep(interval)

    return loop
