"""Reliable messaging over the real RabbitMQ and PostgreSQL.

Poison on a participant's queue, a relay dying between publish and mark-sent,
duplicated and reordered deliveries in both flavours, and the broker stopped mid-run:
every saga still ends, every effect happens once, and nothing is lost.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Sequence

import pytest

from sagakit import Orchestrator, Runtime, SagaHandle, StartRequest, outcomes
from sagakit.engine.choreography import Choreography
from sagakit.errors import TransportError
from sagakit.model.messages import Envelope, MessageKind, TransportMessage, command_queue
from sagakit.ports import PublishResult
from sagakit.stores import open_store
from sagakit.stores.sql import SqlSagaStore
from sagakit.testing import Faults, FaultyTransport, forward_only
from sagakit.transports.rabbitmq import RabbitTransport
from tests.conftest import open_rabbit
from tests.integration.shop import check_effects, create_effects, effects, order_participants
from tests.sagas import ORDER

pytestmark = pytest.mark.slow


@pytest.fixture
async def pg_store(pg_url: str) -> AsyncIterator[SqlSagaStore]:
    store = open_store(pg_url)
    await store.migrate()
    await create_effects(store)
    yield store
    await store.close()


def orders(n: int, prefix: str = "o") -> list[StartRequest]:
    return [
        StartRequest("order", {"decline": i % 5 == 1, "far": i % 5 == 2}, saga_id=f"{prefix}-{i}")
        for i in range(n)
    ]


async def run_orders(
    store: SqlSagaStore, transport: object, n: int, **runtime: object
) -> dict[str, str]:
    orchestrator = Orchestrator(store, [ORDER])
    rt = Runtime(transport, timer_interval=0.05, relay_poll=0.2, **runtime)  # type: ignore[arg-type]
    rt.add(orchestrator, *order_participants(store, flaky={"charge"}))
    async with rt:
        ids = await orchestrator.start_many(orders(n))
        return await outcomes([SagaHandle(i, store) for i in ids], timeout=90)


async def books_balance(store: SqlSagaStore, statuses: dict[str, str]) -> None:
    assert Counter(statuses.values()) == {
        "completed": sum(1 for s in statuses if int(s.split("-")[1]) % 5 not in (1, 2)),
        "compensated": sum(1 for s in statuses if int(s.split("-")[1]) % 5 in (1, 2)),
    }
    assert check_effects(statuses, await effects(store)) == []
    for saga_id in statuses:
        assert forward_only(saga_id, await store.history(saga_id)) == []
    assert await store.unsent_count() == 0


def junk(queue: str) -> dict[str, TransportMessage]:
    def envelope(**overrides: object) -> bytes:
        fields: dict[str, object] = {
            "message_id": "x",
            "type": "payment.teleport",
            "kind": MessageKind.COMMAND,
            "saga_id": "nobody",
            "created_at": 1.0,
            "step": "charge",
            "op": "action",
            "reply_to": "sagakit.replies.orchestrator",
        }
        fields.update(overrides)
        return Envelope(**fields).to_bytes()  # type: ignore[arg-type]

    return {
        "malformed": TransportMessage(queue, "junk-1", b"\x00{not json at all"),
        "unknown_type": TransportMessage(queue, "junk-2", envelope(message_id="junk-2")),
        "oversize": TransportMessage(queue, "junk-3", b'{"pad": "' + b"x" * 1_100_000 + b'"}'),
        "schema": TransportMessage(queue, "junk-4", b'{"message_id": "junk-4", "kind": "command"}'),
    }


async def test_poison_on_a_participant_queue_is_dead_lettered_while_sagas_complete(
    pg_store: SqlSagaStore,
) -> None:
    rabbit = await open_rabbit()
    try:
        orchestrator = Orchestrator(pg_store, [ORDER])
        rt = Runtime(rabbit, timer_interval=0.05, relay_poll=0.2)
        rt.add(orchestrator, *order_participants(pg_store))
        async with rt:
            ids = await orchestrator.start_many(orders(20))
            poison = junk(command_queue("payment"))
            sent = await rabbit.publish(list(poison.values()))
            assert len(sent.confirmed) == 4
            statuses = await outcomes([SagaHandle(i, pg_store) for i in ids], timeout=60)
            for _ in range(100):
                if await rabbit.dead_letters.depth() == 4:
                    break
                await asyncio.sleep(0.05)
            letters = {
                letter.message.message_id: letter for letter in await rabbit.dead_letters.list()
            }
        await books_balance(pg_store, statuses)
        reasons = {letters[m.message_id].reason: m.message_id for m in poison.values()}
        assert set(reasons) == set(poison)
        for letter in letters.values():
            assert letter.queue == command_queue("payment")
        assert "teleport" in letters["junk-2"].detail
    finally:
        await rabbit.teardown()
        await rabbit.close()


class DiesOnce:
    """A relay's transport that publishes and then fails before anything is marked
    sent, as a relay process killed between the broker's confirm and its commit."""

    def __init__(self, inner: RabbitTransport) -> None:
        self.inner = inner
        self.died = False

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def publish(self, messages: Sequence[TransportMessage]) -> PublishResult:
        result = await self.inner.publish(messages)
        if not self.died and len(messages) > 1:
            self.died = True
            raise TransportError("the relay died after the broker confirmed")
        return result


async def test_a_relay_dying_between_publish_and_mark_sent_costs_a_duplicate_not_an_effect(
    pg_store: SqlSagaStore,
) -> None:
    rabbit = await open_rabbit()
    try:
        dying = DiesOnce(rabbit)
        statuses = await run_orders(pg_store, dying, 20)
        assert dying.died
        await books_balance(pg_store, statuses)
    finally:
        await rabbit.teardown()
        await rabbit.close()


@pytest.mark.parametrize("mode", ["orchestration", "choreography"])
async def test_duplicated_and_reordered_deliveries_over_rabbitmq(
    pg_store: SqlSagaStore, mode: str
) -> None:
    rabbit = await open_rabbit(max_deliveries=10)
    faulty = FaultyTransport(rabbit, Faults(duplicate=0.1, reorder=0.1, seed=5))
    try:
        if mode == "orchestration":
            statuses = await run_orders(pg_store, faulty, 30)
        else:
            choreography = Choreography([ORDER])
            rt = Runtime(faulty, relay_poll=0.2)
            rt.add(
                choreography.tracker(pg_store),
                *(choreography.follow(p) for p in order_participants(pg_store, flaky={"charge"})),
            )
            async with rt:
                ids = [
                    await choreography.start(pg_store, "order", r.data, saga_id=r.saga_id)
                    for r in orders(30)
                ]
                statuses = await outcomes([SagaHandle(i, pg_store) for i in ids], timeout=90)
        await books_balance(pg_store, statuses)
        assert faulty.counts.duplicated and faulty.counts.reordered
    finally:
        await rabbit.teardown()
        await rabbit.close()


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


@pytest.mark.timeout(300)
async def test_the_broker_stopping_mid_run_backs_the_outbox_up_and_loses_nothing(
    pg_store: SqlSagaStore,
) -> None:
    rabbit = await open_rabbit(publish_timeout=1.0, reconnect_interval=0.5)
    orchestrator = Orchestrator(pg_store, [ORDER])
    rt = Runtime(rabbit, timer_interval=0.05, relay_poll=0.2)
    rt.add(orchestrator, *order_participants(pg_store))
    try:
        async with rt:
            ids = await orchestrator.start_many(orders(20, "early"))
            await outcomes([SagaHandle(i, pg_store) for i in ids], timeout=60)
            await asyncio.to_thread(rabbitmqctl, "stop_app")
            try:
                late = await orchestrator.start_many(orders(20, "late"))
                await asyncio.sleep(2)
                backed_up = await pg_store.unsent_count()
            finally:
                await asyncio.to_thread(rabbitmqctl, "start_app")
                await asyncio.to_thread(rabbitmqctl, "await_startup")
            statuses = await outcomes([SagaHandle(i, pg_store) for i in ids + late], timeout=120)
        assert backed_up >= 20  # the new sagas' first commands waited in the outbox
        await books_balance(pg_store, statuses)
    finally:
        await rabbit.teardown()
        await rabbit.close()
