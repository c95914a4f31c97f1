"""Lab 6: the event-sourced saga log.

A saga's state is not a row that gets overwritten: it is the fold of the saga's
append-only events. Three things follow, and this lab shows each on real sagas:

- replay: any saga's state, at any point of its history, is recomputed from its events;
- snapshots: a long saga (here a mail server busy twenty times over) does not make
  every load read every event; the store keeps a snapshot every fifty events and reads
  only what follows it;
- versions: an event written in an older shape (``StepFailed`` v1 had one ``error``
  field) is upcast to the current shape (v2: ``reason`` and ``retryable``) when read.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, update

from sagakit import (
    Orchestrator,
    RetryPolicy,
    Runtime,
    SagaDefinition,
    SagaHandle,
    SagaState,
    StepContext,
    TransientError,
    open_store,
    outcomes,
)
from sagakit.engine.orchestrator import start_message
from sagakit.model.events import StepFailed, decode
from sagakit.model.transitions import fold_stored
from sagakit.ports import UnitOfWork
from sagakit.stores.schema import saga_events, saga_snapshots, sagas
from sagakit.stores.sql import SqlSagaStore
from sagakit_shop.app import SAGA, Shop
from sagakit_shop.contracts import NotifyCustomer
from sagakit_shop.labs.kit import (
    Narrator,
    lab_transport,
    never_published,
    open_shop,
    rows,
    table,
    unsent,
)
from sagakit_shop.saga import ORDER_SAGA
from sagakit_shop.services.notification import NotificationService
from sagakit_shop.world import default_world

TITLE = "The event-sourced saga log"
LESSON = (
    "A saga's state replayed from its events; a snapshot sparing a long saga's loads "
    "most of its log; an old event version upcast when it is read."
)

BUSY_TIMES = 20
LEGACY_DB = "legacy"

#: The shop's order saga with the mail step retried every few milliseconds, so a mail
#: server that stays busy makes a long log quickly.
LONG_ORDER = SagaDefinition(
    "long_order",
    steps=[
        dataclasses.replace(
            step,
            retry=RetryPolicy(
                attempts=None,
                backoff=timedelta(milliseconds=5),
                multiplier=1.0,
                cap=timedelta(milliseconds=5),
            ),
        )
        if step.name == "notify_customer"
        else step
        for step in ORDER_SAGA.steps
    ],
)


class BusyMailService(NotificationService):
    """The shop's notification service; the mail server refuses the first ``busy`` tries."""

    busy = 0

    async def notify(self, ctx: StepContext, cmd: NotifyCustomer) -> None:
        if ctx.attempt <= self.busy:
            raise TransientError(f"mail server busy (try {ctx.attempt})")
        await super().notify(ctx, cmd)


async def _place(shop: Shop, definition: SagaDefinition, customer: str, sku: str) -> str:
    async def start(unit: UnitOfWork, order_id: str, data: dict[str, Any]) -> None:
        await unit.enqueue([start_message(definition, data, saga_id=order_id, key=order_id)])

    return (await shop.orders.place(customer, sku, 1, start=start)).order_id


async def _replay(store: SqlSagaStore, saga_id: str, say: Narrator) -> dict[str, Any]:
    """Fold the saga's events one at a time, showing the state after each."""
    history = await store.history(saga_id)
    state: SagaState | None = None
    steps = []
    for stored in history:
        state = fold_stored(saga_id, [stored], state)
        steps.append((stored.seq, stored.type, state.status.value, state.current_step or ""))
    assert state is not None  # history() raises for a saga with no events
    say.show(
        table(f"{saga_id}, replayed event by event", ["#", "event", "status", "running"], steps)
    )
    projection = await store.statuses([saga_id])
    return {
        "saga_id": saga_id,
        "events": len(history),
        "status": state.status.value,
        "same_as_store": state == await store.get(saga_id),
        "same_as_projection": projection.get(saga_id) == state.status.value,
    }


async def _snapshot(store: SqlSagaStore, saga_id: str, say: Narrator) -> dict[str, Any]:
    """Load the long saga as the orchestrator does, and from its whole log, and compare."""
    async with store.unit() as unit:
        loaded = await unit.load([saga_id], lock=False)
    history = await store.history(saga_id)
    whole = fold_stored(saga_id, history)
    snap = await rows(
        store,
        select(saga_snapshots.c.version).where(saga_snapshots.c.saga_id == saga_id),
    )
    figures = {
        "saga_id": saga_id,
        "events_in_log": len(history),
        "snapshot_every": store.snapshot_every,
        "snapshot_at": snap[0].version if snap else None,
        "events_read_with_snapshot": loaded.events_read,
        "events_read_without_snapshot": len(history),
        "same_state": loaded.states.get(saga_id) == whole,
    }
    say.say(
        f"{saga_id} has {len(history)} events; loading it read {loaded.events_read} "
        f"(those after the snapshot at {figures['snapshot_at']}), and gave the same state "
        f"as folding all {len(history)}: {figures['same_state']}"
    )
    return figures


#: An order's data, as the order service starts its saga with (its steps check it).
LEGACY_ORDER = {
    "order_id": "order-legacy",
    "number": 1,
    "customer_id": "c-ada",
    "customer": "Ada",
    "email": "ada@example.com",
    "region": "eu",
    "sku": "lamp",
    "item": "desk lamp",
    "quantity": 1,
    "amount_cents": 2500,
}


async def _upcast(directory: Path, say: Narrator) -> dict[str, Any]:
    """Write a StepFailed v1 row into a saga's log, as an older sagakit did, and read it."""
    store = open_store(f"sqlite:///{directory / LEGACY_DB}.db")
    try:
        saga_id = await Orchestrator(store, [ORDER_SAGA]).start(
            ORDER_SAGA.name, LEGACY_ORDER, saga_id="order-legacy"
        )  # SagaStarted, StepRequested(create_order); no runtime, so it goes no further
        legacy = '{"step": "create_order", "attempt": 1, "error": "customer blocked"}'
        async with store.unit() as unit:
            await unit.connection.execute(
                insert(saga_events).values(
                    saga_id=saga_id,
                    seq=3,
                    type="StepFailed",
                    schema_version=1,
                    data=legacy,
                    recorded_at=store.clock.now(),
                )
            )
            await unit.connection.execute(
                update(sagas).where(sagas.c.saga_id == saga_id).values(version=3)
            )
        stored = (await store.history(saga_id))[2]
        event = decode(stored)
        state = await store.get(saga_id)
    finally:
        await store.close()
    assert isinstance(event, StepFailed)
    say.say(f"stored: {stored.type} v{stored.schema_version} {stored.data}")
    say.say(f"read:   {event.event_type} v{event.schema_version} {event.model_dump_json()}")
    return {
        "saga_id": saga_id,
        "stored_type": stored.type,
        "stored_version": stored.schema_version,
        "stored_data": stored.data,
        "read_version": event.schema_version,
        "reason": event.reason,
        "retryable": event.retryable,
        "step_error_in_state": state.steps["create_order"].error,
    }


async def run(directory: Path, *, story: bool) -> dict[str, Any]:
    say = Narrator(story=story)
    shop = await open_shop(
        directory,
        default_world(orders=2),
        replace={"notification": BusyMailService},
        extra_dbs=[LEGACY_DB],
    )
    mail = shop.services["notification"]
    assert isinstance(mail, BusyMailService)
    store = shop.saga_store
    orchestrator = Orchestrator(store, [ORDER_SAGA, LONG_ORDER])
    services = [name for name in shop.services if name != SAGA]
    runtime = Runtime(lab_transport(), timer_interval=0.01)
    try:
        async with runtime.add(orchestrator, *shop.components(services)):
            say.say("An order through the shop's order saga:")
            short = await _place(shop, ORDER_SAGA, "c-ada", "lamp")
            await outcomes([SagaHandle(short, store)], timeout=30)
            say.say(f"A long saga: the mail server is busy for the next {BUSY_TIMES} tries.")
            mail.busy = BUSY_TIMES
            long = await _place(shop, LONG_ORDER, "c-grace", "mug")
            await outcomes([SagaHandle(long, store)], timeout=60)
        replay = await _replay(store, short, say)
        snapshot = await _snapshot(store, long, say)
        left = await unsent(shop)
    finally:
        await shop.close()
    upcast = await _upcast(directory, say)
    figures: dict[str, Any] = {"replay": replay, "snapshot": snapshot, "upcast": upcast}
    problems = []
    if not (replay["same_as_store"] and replay["same_as_projection"]):
        problems.append("replaying the log did not give the stored state")
    if snapshot["snapshot_at"] is None or not snapshot["same_state"]:
        problems.append("the long saga was not loaded from a snapshot to the same state")
    elif snapshot["events_read_with_snapshot"] >= snapshot["events_read_without_snapshot"]:
        problems.append("the snapshot did not spare reading any events")
    if (upcast["stored_version"], upcast["read_version"]) != (1, 2):
        problems.append("the old event was not read at the current version")
    problems.extend(never_published(left))
    figures["problems"] = problems
    return figures
