"""The concert booking service: its saga, its participants, and the runtime that
``sagakit run concerts.service:runtime`` starts. Configured from the environment:
CONCERTS_DB (the store) and CONCERTS_BROKER (memory:// or amqp://...)."""

from __future__ import annotations

import os
from datetime import timedelta

from sagakit import (
    Orchestrator,
    Participant,
    Runtime,
    SagaDefinition,
    Step,
    StepContext,
    StepKind,
    StepRejected,
    open_store,
    open_transport,
)
from sagakit.ports import SagaStore

BOOKING = SagaDefinition(
    "concert-booking",
    steps=[
        Step(name="seats", participant="seats", command="hold", compensation="release"),
        Step(name="parking", participant="parking", command="reserve", compensation="cancel"),
        Step(
            name="charge",
            participant="card",
            command="charge",
            kind=StepKind.PIVOT,
            timeout=timedelta(seconds=10),
        ),
        Step(name="tickets", participant="mail", command="send", kind=StepKind.RETRIABLE),
    ],
)


def participants(store: SagaStore) -> list[Participant]:
    seats, parking, card, mail = (
        Participant(name, store) for name in ("seats", "parking", "card", "mail")
    )

    @seats.command("hold")
    async def hold(ctx: StepContext) -> dict[str, str]:
        return {"seat_hold": f"hold-{ctx.saga_id[:8]}"}

    @seats.command("release")
    async def release(ctx: StepContext) -> None:
        return None

    @parking.command("reserve")
    async def reserve(ctx: StepContext) -> None:
        return None

    @parking.command("cancel")
    async def cancel(ctx: StepContext) -> None:
        return None

    @card.command("charge")
    async def charge(ctx: StepContext) -> dict[str, str]:
        if ctx.payload["amount"] > 500:
            raise StepRejected("the card's limit is 500")
        return {"receipt": f"r-{ctx.saga_id[:8]}"}

    @mail.command("send")
    async def send(ctx: StepContext) -> None:
        return None

    return [seats, parking, card, mail]


def runtime() -> Runtime:
    """The whole service in one process; run it twice and the two share the work."""
    store = open_store(os.environ["CONCERTS_DB"])
    transport = open_transport(os.environ.get("CONCERTS_BROKER", "memory://"))
    orchestrator = Orchestrator(store, [BOOKING])
    return Runtime(transport).add(orchestrator, *participants(store))
