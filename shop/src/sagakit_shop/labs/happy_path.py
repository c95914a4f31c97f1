"""Lab 1: choreography, the happy path.

One order through the shop with no coordinator: each service reacts to the event the
step before it published (the order service to ``order.started``, the inventory service
to ``order.create_order.succeeded``, ...) and publishes its own outcome, through its
outbox, in the same local transaction as its work. A tracker listens to every event and
keeps the saga log, which is how anyone knows the whole transaction has finished.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sagakit import Choreography, Runtime, outcomes
from sagakit_shop.labs.kit import (
    EventTap,
    Narrator,
    SeenEvent,
    lab_transport,
    never_published,
    open_shop,
    reactions,
    table,
    unsent,
    until,
)
from sagakit_shop.saga import ORDER_SAGA
from sagakit_shop.world import default_world

TITLE = "Choreography: the happy path"
LESSON = (
    "One order, no coordinator: each service reacts to the previous step's event and "
    "publishes its own; the event waterfall shows who reacted to what."
)


def _reactors(choreography: Choreography, key: str) -> str:
    routes = [r for r in choreography.routes if r.trigger == key]
    if not routes:
        return "nobody reacts: the tracker records the saga's end"
    return "; ".join(f"{r.step.participant} reacts with {r.step.name}" for r in routes)


async def run(directory: Path, *, story: bool) -> dict[str, Any]:
    say = Narrator(story=story)
    shop = await open_shop(directory, default_world(orders=1), mode="choreography")
    choreography = shop.choreography
    assert choreography is not None  # choreography mode

    def heard(event: SeenEvent) -> None:
        say.say(f"{event.key}  ->  {_reactors(choreography, event.key)}", who="bus")

    tap = EventTap(shop.saga_store, [ORDER_SAGA], on_event=heard)
    say.say("Placing one order; every service listens for events, nobody gives orders.")
    try:
        async with Runtime(lab_transport()).add(*shop.components(), tap):
            placed = await shop.place("c-ada", "lamp", 2)
            statuses = await outcomes([shop.saga(placed.order_id)], timeout=30)
            last = f"{ORDER_SAGA.name}.{ORDER_SAGA.steps[-1].name}.succeeded"  # never optional
            if statuses[placed.order_id] == "completed":
                await until(
                    lambda: last in tap.routing_keys(), timeout=10, what=f"the tap seeing {last}"
                )
        order = await shop.orders.get(placed.order_id)
        left = await unsent(shop)
        history = await shop.saga_store.history(placed.order_id)
    finally:
        await shop.close()
    seen = [e for e in tap.seen if e.saga_id == placed.order_id]
    reacted = reactions(seen, ORDER_SAGA)
    by_trigger = {r.trigger: r for r in reacted}
    say.show(
        table(
            f"event waterfall of {placed.order_id}",
            ["#", "event on the bus", "who reacted", "and published"],
            [
                (
                    i,
                    event.key,
                    f"{by_trigger[event.key].service}: {by_trigger[event.key].step}"
                    if event.key in by_trigger
                    else "(the tracker: saga done)",
                    by_trigger[event.key].published if event.key in by_trigger else "",
                )
                for i, event in enumerate(seen, start=1)
            ],
        )
    )
    status = statuses[placed.order_id]
    figures: dict[str, Any] = {
        "order_id": placed.order_id,
        "events": [e.key for e in seen],
        "reactions": [
            {"event": r.trigger, "service": r.service, "step": r.step, "published": r.published}
            for r in reacted
        ],
        "saga_status": status,
        "order_status": order["status"] if order else None,
        "saga_log_events": len(history),
        "unsent_outbox_rows": left,
    }
    problems = []
    if status != "completed":
        problems.append(f"the saga ended {status}, not completed")
    choreographed = [step for step in ORDER_SAGA.steps if not step.optional]
    if len(reacted) != len(choreographed):
        problems.append(f"{len(reacted)} reactions seen, one per step expected")
    problems.extend(never_published(left))
    figures["problems"] = problems
    return figures
