"""The outbox relay: confirmed means sent, unconfirmed means published again."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from sagakit.engine.relay import OutboxRelay
from sagakit.errors import TransportError
from sagakit.model.messages import Envelope, MessageKind, Outgoing, TransportMessage
from sagakit.ports import Delivery, PublishResult
from sagakit.stores import open_store
from sagakit.stores.sql import SqlSagaStore
from sagakit.transports.memory import MemoryTransport


def message(n: int, queue: str = "work", *, then: str = "") -> Outgoing:
    """Saga ``s{n}``'s message ``m{n}``, or a later one of the same saga (``then``)."""
    env = Envelope(
        message_id=f"m{n}{then}", type="t", kind=MessageKind.EVENT, saga_id=f"s{n}", created_at=0.0
    )
    return Outgoing(queue, env)


class Collector:
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def __call__(self, deliveries: Sequence[Delivery]) -> None:
        self.seen.extend(d.message.message_id for d in deliveries)


async def test_unroutable_rows_stay_unsent_until_their_queue_exists(store: SqlSagaStore) -> None:
    transport = MemoryTransport()
    relay = OutboxRelay(store, transport, retry_after=0.0)
    async with store.unit() as unit:
        await unit.enqueue([message(n) for n in range(3)])
    assert await relay.drain() == 0
    assert await store.unsent_count() == 3
    collector = Collector()
    await transport.consume("work", collector)
    assert await relay.drain() == 3
    assert sorted(collector.seen) == ["m0", "m1", "m2"]
    assert await store.unsent_count() == 0
    await transport.close()


class DiesAfterPublishing(MemoryTransport):
    """Publishes, then fails before the relay can mark anything sent, like a relay
    process killed between the broker's confirm and its own commit."""

    def __init__(self) -> None:
        super().__init__()
        self.die = True

    async def publish(self, messages: Sequence[TransportMessage]) -> PublishResult:
        result = await super().publish(messages)
        if self.die:
            self.die = False
            raise TransportError("relay died before mark-sent")
        return result


async def test_a_relay_dying_after_publish_publishes_again(store: SqlSagaStore) -> None:
    transport = DiesAfterPublishing()
    collector = Collector()
    await transport.consume("work", collector)
    relay = OutboxRelay(store, transport, retry_after=0.0)
    async with store.unit() as unit:
        await unit.enqueue([message(1)])
    await relay.drain()
    assert await store.unsent_count() == 1  # not marked: the confirm never reached the store
    await relay.drain()
    assert collector.seen == ["m1", "m1"]  # at least once: the second copy is the inbox's job
    assert await store.unsent_count() == 0
    await transport.close()


async def test_relay_run_publishes_on_wakeup(store: SqlSagaStore) -> None:
    transport = MemoryTransport()
    collector = Collector()
    await transport.consume("work", collector)
    relay = OutboxRelay(store, transport, poll_interval=30.0)  # only a wake-up can be quick
    task = asyncio.create_task(relay.run())
    await asyncio.sleep(0.2)
    async with store.unit() as unit:
        await unit.enqueue([message(n) for n in range(600)])  # more than one batch
    for _ in range(200):
        if len(collector.seen) == 600:
            break
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(collector.seen) == sorted(f"m{n}" for n in range(600))
    await transport.close()


async def test_notify_wakes_a_relay_in_another_process(pg_url: str) -> None:
    writer, reader = open_store(pg_url), open_store(pg_url)
    await writer.migrate()
    waiting = asyncio.create_task(reader.wait_for_outbox(10.0))
    await asyncio.sleep(0.3)  # the reader's LISTEN connection is up
    started = asyncio.get_running_loop().time()
    async with writer.unit() as unit:
        await unit.enqueue([message(1)])
    await asyncio.wait_for(waiting, 5.0)
    assert asyncio.get_running_loop().time() - started < 2.0
    await writer.close()
    await reader.close()


class SlowToConfirm(MemoryTransport):
    """Confirms a publish a little after its consumer handled it (an in-process
    transport's confirm waits for the consumer; a broker's may come late)."""

    async def publish(self, messages: Sequence[TransportMessage]) -> PublishResult:
        result = await super().publish(messages)
        await asyncio.sleep(0.1)
        return result


async def test_a_message_held_behind_its_sagas_earlier_one_goes_when_that_one_commits(
    pg_url: str,
) -> None:
    """Over the in-process transport a publish returns once the consumer has handled the
    message, so the next message the consumer wrote for the same saga is committed
    before the relay marks the first one sent: a claim then leaves it behind the first
    (saga order). It must go when that claim commits, not at the relay's next poll."""
    store = open_store(pg_url)
    await store.migrate()
    transport = SlowToConfirm()
    got: list[str] = []
    answered = asyncio.Event()

    async def answer(deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            got.append(delivery.message.message_id)
            if delivery.message.message_id.endswith("-next"):
                answered.set()
            else:
                n = int(delivery.message.message_id.removeprefix("m"))
                async with store.unit() as unit:
                    await unit.enqueue([message(n, then="-next")])

    await transport.consume("work", answer)
    relay = OutboxRelay(store, transport, poll_interval=30.0)  # a stall would be plain
    task = asyncio.create_task(relay.run())
    await asyncio.sleep(0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    for n in range(10):
        async with store.unit() as unit:
            await unit.enqueue([message(n)])
        await asyncio.wait_for(answered.wait(), 10.0)
        answered.clear()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert got == [m for n in range(10) for m in (f"m{n}", f"m{n}-next")]
    assert loop.time() - started < 5.0
    await transport.close()
    await store.close()
