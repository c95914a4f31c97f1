"""A service of a user's own, as ``sagakit run tests.e2e.service_app:factory`` loads it.

A concert booking on one store: hold seats, then charge the card (the pivot). The
charge takes a while (SERVICE_CHARGE_SECONDS), so a stop can find handlers running.
Configured as a deployed service is, from the environment.
"""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta

from sagakit import (
    Orchestrator,
    Participant,
    RetryPolicy,
    Runtime,
    SagaDefinition,
    Step,
    StepContext,
    StepKind,
    open_store,
    open_transport,
)

QUICK = RetryPolicy(attempts=3, backoff=timedelta(milliseconds=50), cap=timedelta(seconds=1))

BOOKING = SagaDefinition(
    "booking",
    steps=[
        Step(
            name="seats",
            participant="seats",
            command="hold",
            compensation="release",
            retry=QUICK,
            timeout=timedelta(seconds=10),
        ),
        Step(
            name="charge",
            participant="card",
            command="charge",
            kind=StepKind.PIVOT,
            retry=QUICK,
            timeout=timedelta(seconds=10),
        ),
    ],
)


def factory() -> Runtime:
    """The whole service in one process: orchestrator and both participants."""
    store = open_store(os.environ["SERVICE_DB"])
    seats = Participant("seats", store)
    card = Participant("card", store)
    pause = float(os.environ.get("SERVICE_CHARGE_SECONDS", "0.2"))

    @seats.command("hold")
    async def hold(ctx: StepContext) -> None:
        return None

    @seats.command("release")
    async def release(ctx: StepContext) -> None:
        return None

    @card.command("charge")
    async def charge(ctx: StepContext) -> dict[str, str]:
        await asyncio.sleep(pause)
        return {"receipt": f"r-{ctx.saga_id[:8]}"}

    transport = open_transport(os.environ["SERVICE_BROKER"])
    orchestrator = Orchestrator(store, [BOOKING])
    return Runtime(transport, relay_poll=0.1).add(orchestrator, seats, card)


async def orchestrator_only() -> Runtime:
    """An async factory whose definition names participants nobody serves."""
    store = open_store(os.environ["SERVICE_DB"])
    return Runtime(open_transport(os.environ["SERVICE_BROKER"])).add(Orchestrator(store, [BOOKING]))
