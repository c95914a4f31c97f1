"""Choreography: the same definition run by events, and logged as if orchestrated."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from sagakit import (
    DefinitionError,
    Orchestrator,
    Runtime,
    SagaDefinition,
    SagaHandle,
    StartRequest,
    Step,
    StepKind,
    outcomes,
)
from sagakit.engine.choreography import Choreography, compile_routes
from sagakit.errors import UnknownSagaError
from sagakit.stores.sql import SqlSagaStore
from sagakit.testing import Faults, FaultyTransport, forward_only
from sagakit.transports.memory import MemoryTransport
from tests.integration.shop import check_effects, create_effects, effects, order_participants
from tests.sagas import ORDER, TRIP

FAST_TIERS = (0.02, 0.05, 0.1, 0.2)


def test_a_definition_compiles_into_event_routes() -> None:
    routes = {(r.trigger, r.step.name, r.op) for r in compile_routes(ORDER)}
    assert routes == {
        ("order.started", "reserve", "action"),
        ("order.reserve.succeeded", "charge", "action"),
        ("order.charge.succeeded", "ship", "action"),
        ("order.ship.succeeded", "notify", "action"),
        # a compensation follows the failure or the compensation of the step after it
        ("order.charge.failed", "reserve", "compensation"),
        ("order.charge.compensated", "reserve", "compensation"),
        ("order.ship.failed", "charge", "compensation"),  # the pivot is never compensated
    }


def test_a_retriable_step_failing_undoes_nothing_even_without_a_pivot() -> None:
    # Compensatable steps and then a retriable one: once the retriable step is reached
    # nothing may be undone, so its failure triggers no compensation (a person decides,
    # as when orchestrated).
    saga = SagaDefinition(
        "late",
        steps=[
            Step(name="hold", participant="p", command="hold", compensation="free"),
            Step(name="mail", participant="p", command="mail", kind=StepKind.RETRIABLE),
        ],
    )
    routes = {(r.trigger, r.step.name, r.op) for r in compile_routes(saga)}
    assert routes == {
        ("late.started", "hold", "action"),
        ("late.hold.succeeded", "mail", "action"),
    }


def test_parallel_groups_need_a_coordinator() -> None:
    with pytest.raises(DefinitionError, match="needs a coordinator to join its branches"):
        compile_routes(TRIP)


def orders(n: int) -> list[tuple[str, dict[str, object]]]:
    return [
        (f"order-{i}", {"amount": i, "decline": i % 5 == 1, "far": i % 5 == 2}) for i in range(n)
    ]


async def run_choreographed(store: SqlSagaStore, transport: object, n: int) -> dict[str, str]:
    choreography = Choreography([ORDER])
    followers = [choreography.follow(p) for p in order_participants(store, flaky={"charge"})]
    runtime = Runtime(transport, relay_poll=0.05)  # type: ignore[arg-type]
    runtime.add(choreography.tracker(store), *followers)
    async with runtime:
        ids = [
            await choreography.start(store, "order", data, saga_id=saga_id, key=saga_id)
            for saga_id, data in orders(n)
        ]
        return await outcomes([SagaHandle(i, store) for i in ids], timeout=60)


async def test_choreographed_sagas_complete_or_compensate_every_effect_once(
    store: SqlSagaStore,
) -> None:
    await create_effects(store)
    statuses = await run_choreographed(store, MemoryTransport(retry_tiers=FAST_TIERS), 20)
    assert Counter(statuses.values()) == {"completed": 12, "compensated": 8}
    assert check_effects(statuses, await effects(store)) == []
    for saga_id in statuses:
        assert forward_only(saga_id, await store.history(saga_id)) == []
    assert await store.unsent_count() == 0  # the tracker commands nobody


async def test_the_tracker_writes_the_same_log_as_the_orchestrator(store: SqlSagaStore) -> None:
    await create_effects(store)
    await run_choreographed(store, MemoryTransport(retry_tiers=FAST_TIERS), 5)
    orchestrator = Orchestrator(store, [ORDER])
    runtime = Runtime(MemoryTransport()).add(orchestrator, *order_participants(store))
    async with runtime:
        ids = await orchestrator.start_many(
            [StartRequest("order", data, saga_id=f"orch-{sid}") for sid, data in orders(5)]
        )
        await outcomes([SagaHandle(i, store) for i in ids], timeout=30)
    for saga_id, _ in orders(5):
        choreographed = [e.type for e in await store.history(saga_id)]
        orchestrated = [e.type for e in await store.history(f"orch-{saga_id}")]
        assert choreographed == orchestrated, saga_id


async def test_duplicated_and_reordered_events_keep_the_books_straight(
    store: SqlSagaStore,
) -> None:
    await create_effects(store)
    faulty = FaultyTransport(
        MemoryTransport(retry_tiers=FAST_TIERS), Faults(duplicate=0.1, reorder=0.1, seed=11)
    )
    statuses = await run_choreographed(store, faulty, 30)
    assert Counter(statuses.values()) == {"completed": 18, "compensated": 12}
    assert check_effects(statuses, await effects(store)) == []
    for saga_id in statuses:
        assert forward_only(saga_id, await store.history(saga_id)) == []
    assert faulty.counts.duplicated and faulty.counts.reordered


async def test_an_open_breaker_defers_choreographed_steps_past_the_delivery_limit(
    store: SqlSagaStore,
) -> None:
    """Without an orchestrator to schedule the retry, the event itself waits: a step
    behind an open breaker is deferred by the transport, uncounted, so an outage far
    longer than the delivery limit's retries ends with every saga completed and
    nothing dead-lettered."""
    import asyncio
    from datetime import timedelta

    from sagakit import Participant, SagaDefinition, Step, StepContext, StepKind
    from sagakit.engine.breakers import CircuitBreaker
    from tests.integration.test_breakers import Gateway

    checkout = SagaDefinition(
        "checkout",
        steps=[
            Step(name="charge", participant="payment", command="charge", compensation="refund"),
            Step(name="ship", participant="shipping", command="ship", kind=StepKind.PIVOT),
        ],
    )
    gateway = Gateway()
    gateway.down = True
    breaker = CircuitBreaker("gw", failures=2, cooldown=timedelta(seconds=0.3))
    payment = Participant("payment", store, breakers=[breaker])
    shipping = Participant("shipping", store)

    @payment.command("charge")
    async def charge(ctx: StepContext) -> None:
        async with ctx.breakers["gw"]:
            await gateway.authorize()

    @payment.command("refund")
    async def refund(ctx: StepContext) -> None:
        return None

    @shipping.command("ship")
    async def ship(ctx: StepContext) -> None:
        return None

    choreography = Choreography([checkout])
    transport = MemoryTransport(retry_tiers=FAST_TIERS, max_deliveries=3)
    runtime = Runtime(transport, relay_poll=0.05)
    runtime.add(choreography.tracker(store), *map(choreography.follow, [payment, shipping]))
    async with runtime:
        ids = [await choreography.start(store, "checkout", {}, saga_id=f"c{i}") for i in range(3)]
        await asyncio.sleep(1.5)  # the outage: several cooldowns, far past 3 deliveries
        gateway.down = False
        statuses = await outcomes([SagaHandle(i, store) for i in ids], timeout=30)
        dead = await transport.dead_letters.depth()
    assert statuses == dict.fromkeys(ids, "completed")
    assert dead == 0
    assert gateway.calls <= 2 + 7 + 3  # two opened it, about a trial a cooldown, then one each


async def test_a_follower_that_starts_late_gets_the_events_published_before_it_started(
    store: SqlSagaStore,
) -> None:
    """Shipping's process starts after sagas have run up to its step. The events that
    reached the tracker's queue must be waiting in shipping's too: the runtime that
    published them declared the whole choreography's queues as it started."""
    await create_effects(store)
    choreography = Choreography([ORDER])
    participants = {p.name: p for p in order_participants(store)}
    early = [choreography.follow(participants[n]) for n in ("inventory", "payment")]
    transport = MemoryTransport(retry_tiers=FAST_TIERS)
    first = Runtime(transport, relay_poll=0.05).add(choreography.tracker(store), *early)
    late = [choreography.follow(participants[n]) for n in ("shipping", "notification")]
    async with first:
        ids = [
            await choreography.start(store, "order", {"amount": i}, saga_id=f"order-{i}")
            for i in range(3)
        ]
        for _ in range(200):  # every saga charged: the next event is shipping's
            if all([await charged(store, saga_id) for saga_id in ids]):
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the sagas never got as far as shipping")
        async with Runtime(transport, relay_poll=0.05).add(*late):
            statuses = await outcomes([SagaHandle(i, store) for i in ids], timeout=30)
    assert statuses == dict.fromkeys(ids, "completed")
    assert check_effects(statuses, await effects(store)) == []


async def charged(store: SqlSagaStore, saga_id: str) -> bool:
    try:
        charge = (await store.get(saga_id)).steps.get("charge")
        return charge is not None and charge.status == "succeeded"
    except UnknownSagaError:  # the tracker has not recorded its start yet
        return False


def test_a_tracker_outside_the_choreographys_trackers_is_refused() -> None:
    with pytest.raises(DefinitionError, match=r"trackers=\['audit'\]"):
        Choreography([ORDER]).tracker(None, name="audit")  # type: ignore[arg-type]
    topology = Choreography([ORDER], trackers=["audit"]).topology
    assert topology["sagakit.audit"] == ["order.#"]
    assert "sagakit.tracker" not in topology
    assert topology["sagakit.choreography.shipping"] == ["order.charge.succeeded"]
