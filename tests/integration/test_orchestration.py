"""Sagas end to end through the runtime, on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from sqlalchemy import event

from sagakit import (
    Orchestrator,
    Runtime,
    SagaHandle,
    SagaStatus,
    StartRequest,
    open_store,
    outcomes,
    wait_terminal,
)
from sagakit.errors import DataError, UnknownSagaError
from sagakit.stores.sql import SqlSagaStore
from sagakit.testing import forward_only
from sagakit.transports.memory import MemoryTransport
from tests.integration.shop import check_effects, create_effects, effects, order_participants
from tests.sagas import ORDER


def orders(n: int) -> list[StartRequest]:
    requests = []
    for i in range(n):
        data = {"amount": 10 + i, "decline": i % 5 == 1, "far": i % 5 == 2}
        requests.append(StartRequest("order", data, saga_id=f"order-{i}", key=f"o{i}"))
    return requests


async def test_sagas_complete_or_compensate_with_every_effect_once(store: SqlSagaStore) -> None:
    await create_effects(store)
    orchestrator = Orchestrator(store, [ORDER])
    runtime = Runtime(MemoryTransport(), timer_interval=0.02)
    runtime.add(orchestrator, *order_participants(store, flaky={"charge", "notify"}))
    async with runtime:
        ids = await orchestrator.start_many(orders(40))
        statuses = await outcomes(ids, timeout=60)
    assert Counter(statuses.values()) == {"completed": 24, "compensated": 16}
    assert check_effects(statuses, await effects(store)) == []
    for saga_id in ids:
        assert forward_only(saga_id, await store.history(saga_id)) == []
    assert await store.unsent_count() == 0


async def test_transient_failures_wait_on_durable_timers(store: SqlSagaStore) -> None:
    await create_effects(store)
    orchestrator = Orchestrator(store, [ORDER])
    runtime = Runtime(MemoryTransport(), timer_interval=0.02)
    runtime.add(orchestrator, *order_participants(store, flaky={"reserve"}))
    async with runtime:
        [saga_id] = await orchestrator.start_many(orders(1))
        await saga_id.outcome(timeout=30)
    types = [e.type for e in await store.history(saga_id)]
    assert types[:6] == [
        "SagaStarted",
        "StepRequested",
        "StepFailed",
        "RetryScheduled",
        "StepRequested",
        "StepSucceeded",
    ]
    assert types[-1] == "SagaCompleted"


async def test_a_retry_survives_a_restart(store: SqlSagaStore) -> None:
    """The retry's due time is in the database; a fresh process picks it up."""
    await create_effects(store)
    first = Orchestrator(store, [ORDER])
    participants = order_participants(store, flaky={"charge"})
    runtime = Runtime(MemoryTransport(), timer_interval=3600)  # its timers never fire
    runtime.add(first, *participants)
    async with runtime:
        [saga_id] = await first.start_many(orders(1))
        for _ in range(500):
            state = await store.get(saga_id)
            if state.steps.get("charge") and state.steps["charge"].retry_at:
                break
            await asyncio.sleep(0.01)
        assert state.steps["charge"].status == "retry_wait"
    # the process is gone; a new orchestrator over the same store carries on
    second = Orchestrator(store, [ORDER])
    restarted = Runtime(MemoryTransport(), timer_interval=0.02)
    restarted.add(second, *order_participants(store))
    async with restarted:
        statuses = await outcomes([SagaHandle(saga_id, store)], timeout=30)
    assert statuses == {saga_id: "completed"}
    assert check_effects(statuses, await effects(store)) == []


async def test_sagas_are_awaited_through_their_handles(
    store: SqlSagaStore, tmp_path: object
) -> None:
    """One way to wait: ``handle.outcome()`` for one saga, ``outcomes(handles)`` for many,
    in one store or several, with ``SagaHandle(saga_id, store)`` for a saga started
    elsewhere. The old ways still answer, with a warning that names the new one."""
    await create_effects(store)
    other = open_store(f"sqlite:///{tmp_path}/other.db")
    await other.migrate()
    await create_effects(other)
    here, there = Orchestrator(store, [ORDER]), Orchestrator(other, [ORDER], group="there")
    runtime = Runtime(MemoryTransport(), timer_interval=0.02).add(here, *order_participants(store))
    elsewhere = Runtime(MemoryTransport(), timer_interval=0.02)
    elsewhere.add(there, *order_participants(other))
    try:
        async with runtime, elsewhere:
            handles = await here.start_many(orders(3))
            far = await there.start("order", {"amount": 5, "decline": True}, saga_id="far")
            assert await handles[0].outcome(timeout=30) == SagaStatus.COMPLETED
            ended = await outcomes([*handles, far], timeout=30)
            assert ended == {
                "order-0": "completed",
                "order-1": "compensated",
                "order-2": "compensated",
                "far": "compensated",
            }
            assert all(isinstance(status, SagaStatus) for status in ended.values())
            assert repr(ended["far"]) == "'compensated'"
            assert await outcomes([SagaHandle("far", other)]) == {"far": "compensated"}
            with pytest.raises(TypeError, match=r"SagaHandle\(saga_id, store\)"):
                await outcomes(["order-0"])  # type: ignore[list-item]
            with pytest.raises(TimeoutError, match="nobody"):
                await SagaHandle("nobody", store).outcome(timeout=0.2)
            with pytest.warns(DeprecationWarning, match="sagakit.outcomes"):
                assert await runtime.wait_for(store, ["order-1"]) == {"order-1": "compensated"}
            with pytest.warns(DeprecationWarning, match="sagakit.outcomes"):
                assert await wait_terminal(other, ["far"]) == {"far": "compensated"}
            with pytest.warns(DeprecationWarning, match="sagakit.outcomes"):
                assert await here.outcomes(["order-0"]) == {"order-0": "completed"}
    finally:
        await other.close()


async def test_starting_an_existing_saga_id_is_a_no_op(store: SqlSagaStore) -> None:
    orchestrator = Orchestrator(store, [ORDER])
    request = StartRequest("order", {"amount": 1}, saga_id="same")
    await orchestrator.start_many([request, request])
    await orchestrator.start_many([request])
    assert [e.type for e in await store.history("same")] == ["SagaStarted", "StepRequested"]
    assert await store.unsent_count() == 1


async def test_concurrent_starts_share_a_transaction(store: SqlSagaStore) -> None:
    """Many callers starting sagas at once (an API under load) pay for one commit, not
    one each; each still gets its own id, and an unknown definition or data that cannot
    be stored fails only its caller."""
    orchestrator = Orchestrator(store, [ORDER])
    commits: list[int] = []
    event.listen(store.engine.sync_engine, "commit", lambda _conn: commits.append(1))
    ids = await asyncio.gather(
        *(orchestrator.start("order", {"amount": i}, key=f"k{i}") for i in range(30)),
        orchestrator.start("no-such-saga", {}),
        orchestrator.start("order", {"amount": 99}, saga_id="chosen"),
        return_exceptions=True,
    )
    assert isinstance(ids[30], LookupError)
    started = [saga_id for saga_id in ids if isinstance(saga_id, str)]
    assert len(set(started)) == 31 and started[-1] == "chosen"
    assert len(commits) == 1
    # one start whose data is not JSON: refused before it joins a transaction, naming
    # the key; the others start, and it alone gets the error
    later = await asyncio.gather(
        orchestrator.start("order", {"amount": 1}, saga_id="fine-1"),
        orchestrator.start("order", {"amount": object()}, saga_id="unstorable"),
        orchestrator.start("order", {"amount": 2}, saga_id="fine-2"),
        return_exceptions=True,
    )
    assert later[0] == "fine-1" and later[2] == "fine-2"
    assert isinstance(later[1], DataError)
    assert "start data['amount']: object is not a JSON value" in str(later[1])
    with pytest.raises(UnknownSagaError):
        await store.get("unstorable")
    started += ["fine-1", "fine-2"]
    for saga_id in started:
        assert [e.type for e in await store.history(saga_id)] == ["SagaStarted", "StepRequested"]
    assert await store.unsent_count() == 33
