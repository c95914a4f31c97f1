"""One suite, every store: SQLite and the real PostgreSQL pass exactly the same tests."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import insert, text

from sagakit import ConcurrencyError, CorruptLogError, UnknownSagaError
from sagakit.model.decide import decide
from sagakit.model.events import StepFailed
from sagakit.model.messages import Envelope, MessageKind, Outgoing, ReplyBody
from sagakit.model.status import SagaStatus
from sagakit.model.triggers import Reply, Start, Tick
from sagakit.stores.migrations import HEAD
from sagakit.stores.schema import saga_events
from sagakit.stores.sql import SqlSagaStore
from tests.sagas import ORDER


async def start(store: SqlSagaStore, saga_id: str = "s1", now: float = 100.0) -> None:
    async with store.unit() as unit:
        decision = decide(
            ORDER,
            None,
            Start(saga_id, {"amount": 5}, key=f"key-{saga_id}"),
            now=now,
            reply_to="replies",
        )
        await unit.append([decision])


async def reply(
    store: SqlSagaStore,
    saga_id: str,
    step: str,
    *,
    ok: bool = True,
    retryable: bool = False,
    now: float = 101.0,
) -> list[str]:
    async with store.unit() as unit:
        state = (await unit.load([saga_id])).states[saga_id]
        attempt = state.steps[step].attempt
        body = ReplyBody(ok=ok, reason=None if ok else "no", retryable=retryable)
        decision = decide(
            ORDER,
            state,
            Reply(step, "action", attempt, f"r{state.version}", body),
            now=now,
            reply_to="replies",
        )
        await unit.append([decision])
    return [e.event_type for e in decision.events]


async def test_migrations_are_idempotent_and_at_head(store: SqlSagaStore) -> None:
    await store.migrate()
    assert await store.is_migrated()
    from alembic.script import ScriptDirectory

    from sagakit.stores.sql import _alembic_config

    assert ScriptDirectory.from_config(_alembic_config(None)).get_current_head() == HEAD


async def test_append_then_load_folds_the_log(store: SqlSagaStore) -> None:
    await start(store)
    assert await reply(store, "s1", "reserve") == ["StepSucceeded", "StepRequested"]
    state = await store.get("s1")
    assert state.status is SagaStatus.RUNNING
    assert state.version == 4 and state.key == "key-s1"
    events = await store.history("s1")
    assert [e.seq for e in events] == [1, 2, 3, 4]
    assert [e.type for e in events] == [
        "SagaStarted",
        "StepRequested",
        "StepSucceeded",
        "StepRequested",
    ]


async def test_projection_is_written_with_the_events(store: SqlSagaStore) -> None:
    await start(store)
    [row] = await store.list_sagas()
    assert (row.saga_id, row.status, row.current_step, row.version) == (
        "s1",
        "running",
        "reserve",
        2,
    )
    assert row.deadline == pytest.approx(130.0)
    assert await store.statuses(["s1", "nope"]) == {"s1": "running"}


async def test_a_rolled_back_unit_leaves_neither_events_nor_projection_nor_outbox(
    store: SqlSagaStore,
) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        async with store.unit() as unit:
            decision = decide(ORDER, None, Start("s1", {}), now=1, reply_to="r")
            await unit.append([decision])
            raise RuntimeError("boom")
    assert await store.list_sagas() == []
    assert await store.unsent_count() == 0
    with pytest.raises(UnknownSagaError):
        await store.history("s1")


async def test_optimistic_concurrency_refuses_a_stale_writer(store: SqlSagaStore) -> None:
    await start(store)
    async with store.unit() as unit:
        stale = (await unit.load(["s1"], lock=False)).states["s1"]
    await reply(store, "s1", "reserve")
    body = ReplyBody(ok=True)
    decision = decide(
        ORDER, stale, Reply("reserve", "action", 1, "late", body), now=2, reply_to="r"
    )
    with pytest.raises(ConcurrencyError):
        async with store.unit() as unit:
            await unit.append([decision])
    assert (await store.get("s1")).version == 4


async def test_a_load_that_waited_for_a_writer_reads_what_it_committed(
    store: SqlSagaStore,
) -> None:
    """A locking load that has to wait for another unit's lock on the saga sees that
    unit's events once it gets the lock, not the log as it was when it asked."""
    await start(store)
    await reply(store, "s1", "reserve")
    holding, release = asyncio.Event(), asyncio.Event()

    async def writer() -> None:
        async with store.unit() as unit:
            state = (await unit.load(["s1"])).states["s1"]
            body = ReplyBody(ok=True)
            trigger = Reply("charge", "action", 1, "r-charge", body)
            await unit.append([decide(ORDER, state, trigger, now=102, reply_to="r")])
            holding.set()
            await release.wait()

    async def reader() -> int:
        await holding.wait()
        async with store.unit() as unit:
            loaded = await unit.load(["s1"])
        assert loaded.broken == {}
        return loaded.states["s1"].version

    written = asyncio.create_task(writer())
    read = asyncio.create_task(reader())
    await holding.wait()
    await asyncio.sleep(0.2)  # the reader is waiting for the lock (where rows lock)
    release.set()
    await written
    assert await read == (await store.get("s1")).version


async def test_snapshots_mean_loading_reads_only_later_events(store: SqlSagaStore) -> None:
    # snapshot_every=10 in the fixture; a saga that retries a lot has a long log
    await start(store)
    now = 101.0
    for _ in range(12):
        await reply(store, "s1", "reserve", ok=False, retryable=True, now=now)
        now += 100
        async with store.unit() as unit:
            state = (await unit.load(["s1"])).states["s1"]
            await unit.append([decide(ORDER, state, Tick(), now=now, reply_to="r")])
    full = await store.get("s1")
    assert full.version > 30
    async with store.unit() as unit:
        loaded = await unit.load(["s1"], lock=False)
        # Prove the early events are not needed: delete everything up to the snapshot.
        snap = await unit.connection.scalar(
            text("SELECT version FROM saga_snapshots WHERE saga_id='s1'")
        )
        await unit.connection.execute(text("DELETE FROM saga_events WHERE seq <= :v"), {"v": snap})
    assert loaded.events_read == full.version - snap < 10
    again = await store.get("s1")
    assert again == full


async def test_one_load_reads_sagas_with_and_without_snapshots_alike(
    store: SqlSagaStore,
) -> None:
    await start(store, "long")
    await start(store, "short")
    now = 101.0
    for _ in range(6):  # past snapshot_every=10 for "long" only
        await reply(store, "long", "reserve", ok=False, retryable=True, now=now)
        now += 100
        async with store.unit() as unit:
            state = (await unit.load(["long"])).states["long"]
            await unit.append([decide(ORDER, state, Tick(), now=now, reply_to="r")])
    async with store.unit() as unit:
        snapped = await unit.connection.scalar(
            text("SELECT snapshot_version FROM sagas WHERE saga_id='long'")
        )
        loaded = await unit.load(["short", "missing", "long", "short"])
    assert snapped > 0
    assert sorted(loaded.states) == ["long", "short"]
    assert loaded.broken == {}
    assert loaded.states["long"] == await store.get("long")
    assert loaded.states["short"] == await store.get("short")


async def test_an_old_event_version_is_upcast_when_read(store: SqlSagaStore) -> None:
    await start(store)
    async with store.unit() as unit:
        # v1 of StepFailed had a single "error" field
        await unit.connection.execute(
            insert(saga_events).values(
                saga_id="s1",
                seq=3,
                type="StepFailed",
                schema_version=1,
                data='{"step": "reserve", "attempt": 1, "error": "legacy failure"}',
                recorded_at=102.0,
            )
        )
        await unit.connection.execute(text("UPDATE sagas SET version = 3 WHERE saga_id = 's1'"))
    from sagakit.model.events import decode

    stored = (await store.history("s1"))[2]
    event = decode(stored)
    assert isinstance(event, StepFailed)
    assert (event.reason, event.retryable) == ("legacy failure", False)
    assert (await store.get("s1")).steps["reserve"].error == "legacy failure"


async def test_a_corrupt_event_names_saga_and_position_and_spares_the_others(
    store: SqlSagaStore,
) -> None:
    await start(store, "good")
    await start(store, "bad")
    async with store.unit() as unit:
        await unit.connection.execute(
            text("UPDATE saga_events SET type = 'Teleported' WHERE saga_id = 'bad' AND seq = 2")
        )
    async with store.unit() as unit:
        loaded = await unit.load(["good", "bad"])
    assert set(loaded.states) == {"good"}
    error = loaded.broken["bad"]
    assert (error.saga_id, error.position) == ("bad", 2)
    assert "unknown event type 'Teleported'" in str(error)
    with pytest.raises(CorruptLogError, match="position 2"):
        await store.get("bad")


async def test_inbox_claims_only_new_keys_and_keeps_replies(store: SqlSagaStore) -> None:
    async with store.unit() as unit:
        assert await unit.claim("c", ["a", "b", "a"]) == {"a", "b"}
        await unit.set_reply("c", "a", '{"ok": true}')
    async with store.unit() as unit:
        assert await unit.claim("c", ["a", "z"]) == {"z"}
        assert await unit.claim("other", ["a"]) == {"a"}
        assert await unit.replies("c", ["a", "b"]) == {"a": '{"ok": true}', "b": None}
        await unit.forget("c", "b")
    async with store.unit() as unit:
        assert await unit.claim("c", ["b"]) == {"b"}


async def test_one_claim_takes_keys_of_several_consumers(store: SqlSagaStore) -> None:
    async with store.unit() as unit:
        assert await unit.claim("c", ["taken"]) == {"taken"}
    async with store.unit() as unit:
        pairs = [("c", "taken"), ("c", "new"), ("d", "taken"), ("d", "new"), ("c", "new")]
        assert await unit.claim_each(pairs) == {("c", "new"), ("d", "taken"), ("d", "new")}
        assert await unit.claim_each([]) == set()
    async with store.unit() as unit:
        assert await unit.claim("d", ["taken", "new", "other"]) == {"other"}


async def test_many_replies_are_set_at_once(store: SqlSagaStore) -> None:
    async with store.unit() as unit:
        await unit.claim("c", ["a", "b"])
        await unit.claim("d", ["a"])
        await unit.set_replies([("c", "a", "1"), ("c", "b", "2"), ("d", "a", "3")])
    async with store.unit() as unit:
        assert await unit.replies("c", ["a", "b"]) == {"a": "1", "b": "2"}
        assert await unit.replies("d", ["a"]) == {"a": "3"}


async def test_claiming_commands_claims_the_actions_of_new_compensations(
    store: SqlSagaStore,
) -> None:
    # A batch's first question to its inbox: which commands are new, and for each new
    # compensation, did its action run (its stored reply) or is it prevented now.
    async with store.unit() as unit:
        await unit.claim("p", ["s1/charge/action", "s3/charge/compensation"])
        await unit.set_replies([("p", "s1/charge/action", "charged")])
    pairs = [("p", "s1/charge/compensation"), ("p", "s2/charge/compensation")]
    pairs += [("p", "s3/charge/compensation"), ("p", "s4/ship/action")]
    actions = {("p", f"s{n}/charge/compensation"): ("p", f"s{n}/charge/action") for n in (1, 2, 3)}
    async with store.unit() as unit:
        fresh, stored = await unit.claim_commands(pairs, actions)
        assert fresh == {
            ("p", "s1/charge/compensation"),
            ("p", "s2/charge/compensation"),
            ("p", "s2/charge/action"),  # never ran: claimed now, so it never will
            ("p", "s4/ship/action"),
        }
        assert stored == {("p", "s1/charge/action"): "charged"}
        # s3's compensation was a duplicate: its action's key was left alone.
        assert await unit.claim("p", ["s3/charge/action"]) == {"s3/charge/action"}


async def test_an_append_stores_the_inbox_replies_it_is_given(store: SqlSagaStore) -> None:
    # The fused runtime's replies ride on its append: stored with the decisions, by key.
    async with store.unit() as unit:
        await unit.claim("c", ["a", "b", "unanswered"])
        await unit.claim("d", ["a"])
        await unit.append([], replies=[("c", "a", "1"), ("c", "b", "2"), ("d", "a", "3")])
    async with store.unit() as unit:
        assert await unit.replies("c", ["a", "b", "unanswered"]) == {
            "a": "1",
            "b": "2",
            "unanswered": None,
        }
        assert await unit.replies("d", ["a"]) == {"a": "3"}


async def test_a_unit_that_opens_with_an_inbox_claim_rolls_it_back(store: SqlSagaStore) -> None:
    # The claim is the unit's first statement: it must belong to the unit's transaction
    # (a claim that outlived a rolled-back unit would block its command for ever).
    with pytest.raises(RuntimeError, match="boom"):
        async with store.unit() as unit:
            assert await unit.claim("c", ["first"]) == {"first"}
            await unit.set_replies([("c", "first", "kept?")])
            raise RuntimeError("boom")
    async with store.unit() as unit:
        assert await unit.claim("c", ["first"]) == {"first"}


def outgoing(n: int, saga: str = "s", queue: str = "q") -> Outgoing:
    env = Envelope(
        message_id=f"m{n}",
        type="t.x",
        kind=MessageKind.COMMAND,
        saga_id=saga,
        created_at=1.0,
        payload={"n": n},
    )
    return Outgoing(queue, env)


async def test_outbox_claims_batches_and_marks_sent(store: SqlSagaStore) -> None:
    async with store.unit() as unit:
        await unit.enqueue([outgoing(n) for n in range(5)])
    assert await store.unsent_count() == 5
    async with store.claim_outbox(limit=3) as claim:
        assert [r.message.message_id for r in claim.rows] == ["m0", "m1", "m2"]
        assert Envelope.from_bytes(claim.rows[0].message.body).payload == {"n": 0}
        assert claim.rows[0].message.headers["saga_id"] == "s"
        claim.mark_sent([claim.rows[0].id, claim.rows[1].id])
    assert await store.unsent_count() == 3
    async with store.claim_outbox(limit=10, exclude=[]) as claim:
        assert [r.message.message_id for r in claim.rows] == ["m2", "m3", "m4"]
    assert await store.outbox_lag(store.clock.now() + 5) >= 5
    assert await store.prune_outbox(sent_before=store.clock.now() + 1) == 2


async def test_an_append_marks_the_outbox_rows_it_is_given_as_sent(store: SqlSagaStore) -> None:
    # What a runtime that ran some outbox commands itself (the fused one) relies on: the
    # rows leave the outbox with the transaction that ran them, and only those rows.
    async with store.unit() as unit:
        await unit.enqueue([outgoing(n) for n in range(3)])
    async with store.unit() as unit:
        await unit.append([], sent=["m0", "m2", "no-such-message"])
    assert await store.unsent_count() == 1
    async with store.claim_outbox(limit=10) as claim:
        assert [r.message.message_id for r in claim.rows] == ["m1"]


async def test_an_unfinished_claim_leaves_rows_unsent(store: SqlSagaStore) -> None:
    async with store.unit() as unit:
        await unit.enqueue([outgoing(1)])
    with pytest.raises(RuntimeError):
        async with store.claim_outbox(limit=10) as claim:
            assert len(claim.rows) == 1
            raise RuntimeError("relay died before confirm")
    assert await store.unsent_count() == 1


async def test_due_claims_sagas_whose_retry_or_deadline_passed(store: SqlSagaStore) -> None:
    await start(store, "early", now=100.0)
    await start(store, "late", now=200.0)
    async with store.unit() as unit:
        assert await unit.due(now=129.0, limit=10) == []
        assert await unit.due(now=131.0, limit=10) == ["early"]
        assert await unit.due(now=1000.0, limit=10) == ["early", "late"]


async def test_list_filters_and_counts(store: SqlSagaStore) -> None:
    await start(store, "a", now=100)
    await start(store, "b", now=200)
    await reply(store, "a", "reserve", ok=False)
    assert [r.saga_id for r in await store.list_sagas()] == ["b", "a"]
    assert [r.saga_id for r in await store.list_sagas(status="compensated")] == ["a"]
    assert [r.saga_id for r in await store.list_sagas(since=150)] == ["b"]
    assert [r.saga_id for r in await store.list_sagas(key="key-b")] == ["b"]
    assert [r.saga_id for r in await store.list_sagas(limit=1, offset=1)] == ["a"]
    assert await store.count_by_status() == {"running": 1, "compensated": 1}
    assert await store.resolve("a") == "a"
    with pytest.raises(UnknownSagaError):
        await store.resolve("zz")


async def test_ids_resolve_whole_or_by_a_unique_start_whatever_their_characters(
    store: SqlSagaStore,
) -> None:
    for saga_id in ("order_17", "order%18", "orderX19", "back\\slash"):
        await start(store, saga_id, now=100)
    for saga_id in ("order_17", "order%18", "orderX19", "back\\slash"):
        assert await store.resolve(saga_id) == saga_id
    assert await store.resolve("order_1") == "order_17"  # _ is a character, not a wildcard
    assert await store.resolve("order%") == "order%18"
    assert await store.resolve("back\\") == "back\\slash"
    with pytest.raises(UnknownSagaError, match="several"):
        await store.resolve("order")
    assert await store.resolve("order_") == "order_17"
    for absent in ("", "%", "_", "order__"):
        with pytest.raises(UnknownSagaError):
            await store.resolve(absent)


async def test_relay_wakeup_fires_on_commit(store: SqlSagaStore) -> None:
    waiter = asyncio.create_task(store.wait_for_outbox(5.0))
    await asyncio.sleep(0.2)  # let PostgreSQL's LISTEN connection come up
    async with store.unit() as unit:
        await unit.enqueue([outgoing(1)])
    await asyncio.wait_for(waiter, 2.0)


async def test_an_embedded_store_migrates_itself_on_first_use(tmp_path: object) -> None:
    from sagakit.stores import open_store

    fresh = open_store(f"sqlite:///{tmp_path}/new/saga.db")
    assert await fresh.list_sagas() == []
    assert await fresh.is_migrated()
    await fresh.close()


async def test_a_claim_never_jumps_ahead_of_a_sagas_earlier_message(pg_url: str) -> None:
    """Two relays on PostgreSQL: the second may not publish saga s's second message while
    the first still holds its first one."""
    from sagakit.stores import open_store

    store = open_store(pg_url)
    await store.migrate()
    async with store.unit() as unit:
        await unit.enqueue([outgoing(1, saga="s"), outgoing(2, saga="other")])
    async with store.unit() as unit:
        await unit.enqueue([outgoing(3, saga="s")])
    async with store.claim_outbox(limit=1) as first:
        assert [r.message.message_id for r in first.rows] == ["m1"]
        async with store.claim_outbox(limit=10) as second:
            assert [r.message.message_id for r in second.rows] == ["m2"]  # not m3
            second.mark_sent([r.id for r in second.rows])
        first.mark_sent([r.id for r in first.rows])
    async with store.claim_outbox(limit=10) as third:
        assert [r.message.message_id for r in third.rows] == ["m3"]
    await store.close()


async def test_a_sagas_message_to_another_queue_never_waits_for_an_earlier_one(
    pg_url: str,
) -> None:
    """Order is per saga and destination: while one claim holds saga s's command to a
    participant (its confirm not back yet), the reply s wrote to the orchestrator may
    go; a second message to the participant's queue may not."""
    from sagakit.stores import open_store

    store = open_store(pg_url)
    await store.migrate()
    async with store.unit() as unit:
        await unit.enqueue([outgoing(1, saga="s", queue="participant")])
    async with store.unit() as unit:
        await unit.enqueue(
            [
                outgoing(2, saga="s", queue="orchestrator"),
                outgoing(3, saga="s", queue="participant"),
            ]
        )
    async with store.claim_outbox(limit=1) as first:
        assert [r.message.message_id for r in first.rows] == ["m1"]
        async with store.claim_outbox(limit=10) as second:
            assert [r.message.message_id for r in second.rows] == ["m2"]  # not m3
            second.mark_sent([r.id for r in second.rows])
        first.mark_sent([r.id for r in first.rows])
    async with store.claim_outbox(limit=10) as third:
        assert [r.message.message_id for r in third.rows] == ["m3"]
    await store.close()


async def test_postgres_connections_plan_for_rows_in_memory_and_plan_each_time(
    pg_url: str,
) -> None:
    """The store's sessions carry its planner settings; ``settings=`` overrides one."""
    from sagakit.stores.postgres import PostgresSagaStore

    store = PostgresSagaStore(pg_url, settings={"random_page_cost": "2"})
    async with store.unit() as unit:
        shown = {
            name: await unit.connection.scalar(text(f"SHOW {name}"))
            for name in ("random_page_cost", "plan_cache_mode")
        }
    assert shown == {"random_page_cost": "2", "plan_cache_mode": "force_custom_plan"}
    await store.close()


async def test_a_connection_the_server_dropped_fails_one_unit_retryably_and_no_more(
    pg_url: str,
) -> None:
    """No ping before each checkout: a dead pooled connection shows itself on its first
    statement, as a retryable StoreError, and the pool then replaces all its peers."""
    from sagakit import StoreError
    from sagakit.stores import open_store

    store = open_store(pg_url)
    await store.migrate()
    async with store.unit() as unit:
        pid = await unit.connection.scalar(text("SELECT pg_backend_pid()"))
    admin = open_store(pg_url)
    async with admin.unit() as unit:
        await unit.connection.execute(text(f"SELECT pg_terminate_backend({pid})"))
    await admin.close()
    with pytest.raises(StoreError) as dropped:
        async with store.unit() as unit:
            await unit.connection.execute(text("SELECT 1"))
    assert dropped.value.retryable
    await start(store, "after")  # a fresh connection: the store works again at once
    assert (await store.get("after")).status == "running"
    await store.close()


async def test_another_process_hears_of_committed_outbox_rows_and_not_of_rolled_back_ones(
    pg_url: str,
) -> None:
    """The NOTIFY that wakes relays elsewhere rides on the outbox insert: it reaches a
    second store (another process's) at commit, and never for a rollback."""
    from sagakit.stores import open_store

    writer, relay = open_store(pg_url), open_store(pg_url)
    await writer.migrate()
    waiter = asyncio.create_task(relay.wait_for_outbox(10.0))
    await asyncio.sleep(0.3)  # let the relay's LISTEN connection come up
    with pytest.raises(RuntimeError):
        async with writer.unit() as unit:
            await unit.enqueue([outgoing(1)])
            raise RuntimeError("rolled back")
    await asyncio.sleep(0.5)
    assert not waiter.done()
    async with writer.unit() as unit:
        await unit.enqueue([outgoing(2)])
        await unit.enqueue([outgoing(3)])  # one notification per transaction is enough
    await asyncio.wait_for(waiter, 2.0)
    await writer.close()
    await relay.close()


async def test_a_waiter_learns_of_ends_committed_in_its_process_at_once(
    store: SqlSagaStore,
) -> None:
    """Ends this process commits answer waiters without a poll (the poll is set to a
    minute here), and one that asks after the end is answered from memory."""
    for saga_id in ("early", "late"):
        await start(store, saga_id)
    await reply(store, "early", "reserve", ok=False)  # nothing to undo: compensated
    waiting = asyncio.create_task(store.wait_ended(["early", "late"], timeout=5, poll=60))
    await asyncio.sleep(0.1)
    assert not waiting.done()

    await reply(store, "late", "reserve", ok=False)

    assert await asyncio.wait_for(waiting, 2) == {"early": "compensated", "late": "compensated"}
    assert await store.wait_ended(["late"], timeout=0.01) == {"late": "compensated"}


async def test_a_wait_that_runs_out_names_the_unfinished(store: SqlSagaStore) -> None:
    await start(store, "slow")
    unfinished = r"1 saga\(s\) not terminal after 0.2s: slow \(running\)"
    with pytest.raises(TimeoutError, match=unfinished):
        await store.wait_ended(["slow"], timeout=0.2)
    assert not store.ends._waiting  # a waiter that gave up leaves nothing behind


async def test_another_process_hears_of_ended_sagas_and_not_of_rolled_back_ends(
    pg_url: str,
) -> None:
    """Ends are announced with the transaction's event insert: a waiter on a second store
    (another process's) hears of one at commit, never of one rolled back, and its poll
    is only the backstop (a minute here, so only the announcement can answer)."""
    from sagakit.stores import open_store

    writer, client = open_store(pg_url), open_store(pg_url)
    assert isinstance(writer, SqlSagaStore) and isinstance(client, SqlSagaStore)
    await writer.migrate()
    for saga_id in ("undone", "kept"):
        await start(writer, saga_id)
    client.ends.backstop = 60.0
    waiting = asyncio.create_task(client.wait_ended(["undone", "kept"], timeout=10))
    await asyncio.sleep(0.3)  # its first look (both running) and LISTEN are done
    with pytest.raises(RuntimeError):
        async with writer.unit() as unit:
            state = (await unit.load(["undone"])).states["undone"]
            body = ReplyBody(ok=False, reason="no", retryable=False)
            trigger = Reply("reserve", "action", 1, "r-undone", body)
            await unit.append([decide(ORDER, state, trigger, now=101.0, reply_to="replies")])
            raise RuntimeError("rolled back")
    await asyncio.sleep(0.3)
    assert not waiting.done()

    await reply(writer, "undone", "reserve", ok=False)
    await reply(writer, "kept", "reserve", ok=False)

    got = await asyncio.wait_for(waiting, 3)
    assert got == {"undone": "compensated", "kept": "compensated"}
    await writer.close()
    await client.close()
