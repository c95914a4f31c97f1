"""The operator's reads, on every store: search, counts by definition and over time,
recent events. SQLite and the real PostgreSQL pass the same tests."""

from __future__ import annotations

import pytest

from sagakit.model.decide import decide
from sagakit.model.triggers import Start
from sagakit.ports import SagaSearch
from sagakit.stores.sql import SqlSagaStore
from tests.contracts.test_store_contract import reply, start
from tests.sagas import ORDER, TRIP


async def found(store: SqlSagaStore, **criteria: object) -> list[str]:
    rows, total = await store.search_sagas(SagaSearch(**criteria))  # type: ignore[arg-type]
    assert total == len(rows)
    return [row.saga_id for row in rows]


async def start_keyed(store: SqlSagaStore, saga_id: str, key: str, *, now: float) -> None:
    async with store.unit() as unit:
        decision = decide(TRIP, None, Start(saga_id, {}, key=key), now=now, reply_to="replies")
        await unit.append([decision])


async def test_search_by_key_reason_step_definition_and_version(store: SqlSagaStore) -> None:
    await start(store, "a", now=100)  # key-a, running at reserve
    await start(store, "b", now=110)
    await reply(store, "b", "reserve", now=111)  # running at charge
    await reply(store, "b", "charge", ok=False, now=130)  # turns back at charge
    await start(store, "c", now=120)
    await reply(store, "c", "reserve", ok=False, now=121)  # turns back at reserve
    await start_keyed(store, "t", "key_1", now=140)  # a trip: flight runs
    await start_keyed(store, "u", "keyX1", now=141)

    assert await found(store, key="key-a") == ["a"]
    assert await found(store, key="key-*") == ["b", "c", "a"]  # newest change first
    # the key's own _ is a character, not a LIKE wildcard
    assert await found(store, key="key_1") == ["t"]
    assert await found(store, key="key_*") == ["t"]
    assert await found(store, reason="CHARGE FAILED") == ["b"]
    assert await found(store, reason="failed: *o") == ["b", "c"]
    assert await found(store, reason="100%") == []
    assert await found(store, stopped_at="charge") == ["b"]
    # b is undoing reserve now: a current step too
    assert await found(store, stopped_at="reserve") == ["b", "c", "a"]
    assert await found(store, stopped_at="flight") == ["u", "t"]
    assert await found(store, stopped_at="fli") == []
    assert await found(store, definition="trip") == ["u", "t"]
    assert await found(store, definition="order", definition_version=1, status="compensated") == [
        "c"
    ]
    assert await found(store, definition="order", definition_version=2) == []
    assert await found(store, since=125, until=135) == ["b"]


async def test_search_sorts_by_duration_and_pages_with_the_total(store: SqlSagaStore) -> None:
    await start(store, "quick", now=100)
    await reply(store, "quick", "reserve", ok=False, now=101)
    await start(store, "slow", now=100)
    await reply(store, "slow", "reserve", ok=False, now=190)
    await start(store, "middling", now=150)
    await reply(store, "middling", "reserve", ok=False, now=200)
    by_duration = SagaSearch(order="duration")
    rows, total = await store.search_sagas(by_duration)
    assert [r.saga_id for r in rows] == ["slow", "middling", "quick"] and total == 3
    rows, total = await store.search_sagas(by_duration, limit=1, offset=1)
    assert [r.saga_id for r in rows] == ["middling"] and total == 3


async def test_counts_by_definition_version_and_status(store: SqlSagaStore) -> None:
    await start(store, "a", now=100)
    await start(store, "b", now=100)
    await reply(store, "b", "reserve", ok=False, now=101)
    await start_keyed(store, "t", "trip-1", now=100)
    assert await store.count_by_definition() == {
        ("order", ORDER.version, "running"): 1,
        ("order", ORDER.version, "compensated"): 1,
        ("trip", TRIP.version, "running"): 1,
    }


async def test_events_are_counted_per_interval_within_the_window(store: SqlSagaStore) -> None:
    for saga_id, at in [("early", 50.0), ("a", 100.0), ("b", 109.99), ("c", 110.0), ("d", 139.5)]:
        await start(store, saga_id, now=at)
    await reply(store, "a", "reserve", ok=False, now=125.0)  # compensated at 125
    await reply(store, "d", "reserve", ok=False, now=140.0)  # at the window's end: outside
    counts = await store.events_per_interval(
        ["SagaStarted", "SagaCompensated", "SagaCompleted"], since=100.0, until=140.0, every=10.0
    )
    assert counts == {
        "SagaStarted": [2, 1, 0, 1],
        "SagaCompensated": [0, 0, 1, 0],
        "SagaCompleted": [0, 0, 0, 0],
    }
    with pytest.raises(ValueError, match="every > 0"):
        await store.events_per_interval(["SagaStarted"], since=1.0, until=1.0, every=1.0)


async def test_recent_events_come_newest_first_and_stop_at_the_limit(store: SqlSagaStore) -> None:
    await start(store, "old", now=10.0)
    await start(store, "a", now=100.0)
    await reply(store, "a", "reserve", now=101.0)
    await start(store, "b", now=102.0)
    events = await store.recent_events(["StepRequested", "StepSucceeded"], since=100.0, limit=10)
    assert [(e.saga_id, e.type, e.recorded_at) for e in events] == [
        ("b", "StepRequested", 102.0),
        ("a", "StepRequested", 101.0),
        ("a", "StepSucceeded", 101.0),
        ("a", "StepRequested", 100.0),
    ]
    newest = await store.recent_events(["StepRequested"], since=0.0, limit=2)
    assert [(e.saga_id, e.recorded_at) for e in newest] == [("b", 102.0), ("a", 101.0)]
