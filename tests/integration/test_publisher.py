"""Publish on commit: a commit's messages go out at once from the process that made them;
what that did not get confirmed, the relay publishes, and inboxes absorb the copies."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence

from sagakit import Orchestrator, Runtime, SagaHandle, StartRequest, outcomes
from sagakit.engine.publisher import OutboxPublisher
from sagakit.engine.relay import OutboxRelay
from sagakit.errors import TransportError
from sagakit.model.messages import TransportMessage
from sagakit.ports import Delivery, PublishResult
from sagakit.stores.sql import SqlSagaStore
from sagakit.transports.memory import MemoryTransport
from tests.integration.shop import check_effects, create_effects, effects, order_participants
from tests.integration.test_relay import Collector, message
from tests.sagas import ORDER


class Broken(MemoryTransport):
    """Fails the first ``failures`` publishes: before delivering anything (the broker
    was down, or the process died between its commit and its publish) or, with
    ``after_delivery``, after delivering them (the confirm was lost)."""

    def __init__(self, failures: int, *, after_delivery: bool = False) -> None:
        super().__init__()
        self.failures = failures
        self.after_delivery = after_delivery
        self.delivered: Counter[str] = Counter()

    async def publish(self, messages: Sequence[TransportMessage]) -> PublishResult:
        if self.failures and not self.after_delivery:
            self.failures -= 1
            raise TransportError("broker unreachable")
        result = await super().publish(messages)
        if self.failures:
            self.failures -= 1
            raise TransportError("confirm lost")
        return result

    async def consume(
        self, queue: str, handler: object, *, prefetch: int = 64, concurrency: int = 1
    ) -> object:
        async def counted(deliveries: Sequence[Delivery]) -> None:
            self.delivered.update(d.message.message_id for d in deliveries)
            await handler(deliveries)  # type: ignore[operator]

        return await super().consume(queue, counted, prefetch=prefetch, concurrency=concurrency)


def orders(n: int) -> list[StartRequest]:
    return [
        StartRequest("order", {"amount": 10 + i, "decline": i % 4 == 1}, saga_id=f"order-{i}")
        for i in range(n)
    ]


async def run_sagas(
    store: SqlSagaStore, transport: Broken, *, relay_grace: float = 0.2
) -> tuple[Runtime, dict[str, str]]:
    await create_effects(store)
    orchestrator = Orchestrator(store, [ORDER])
    runtime = Runtime(transport, timer_interval=0.02, relay_poll=0.05, relay_grace=relay_grace)
    runtime.add(orchestrator, *order_participants(store))
    async with runtime:
        ids = await orchestrator.start_many(orders(12))
        statuses = await outcomes([SagaHandle(i, store) for i in ids], timeout=60)
        relayed = sum(relay.stats.published for relay in runtime.relays.values())
        left = sum(p.stats.left for p in runtime.publishers.values())
    assert left > 0 and relayed > 0  # the relay did take over what the publisher left
    assert Counter(statuses.values()) == {"completed": 9, "compensated": 3}
    assert check_effects(statuses, await effects(store)) == []
    assert await store.unsent_count() == 0
    return runtime, statuses


async def test_what_a_failed_publish_left_unsent_the_relay_delivers_once(
    store: SqlSagaStore,
) -> None:
    # The relay leaves a row to the publisher for relay_grace after its commit; a publish
    # that takes longer (over the in-process transport it is confirmed once its handler
    # ran, which on a loaded machine can take a while) is published again by design, and
    # the inbox absorbs the copy. This test is about the failed publishes, so the grace is
    # the default's, long enough for every publish that did not fail.
    transport = Broken(3)
    await run_sagas(store, transport, relay_grace=1.0)
    assert max(transport.delivered.values()) == 1  # never published, so never twice


async def test_copies_from_publisher_and_relay_take_effect_once(store: SqlSagaStore) -> None:
    transport = Broken(3, after_delivery=True)
    await run_sagas(store, transport)
    # Delivered twice (or more: the relay's own confirm may be lost), every effect once.
    assert max(transport.delivered.values()) >= 2


async def test_a_commits_messages_go_out_without_the_relay(store: SqlSagaStore) -> None:
    transport = MemoryTransport()
    collector = Collector()
    await transport.consume("work", collector)
    publisher = OutboxPublisher(store, transport)
    publisher.attach()
    async with store.unit() as unit:
        await unit.enqueue([message(n) for n in range(5)])
    for _ in range(200):
        if await store.unsent_count() == 0:
            break
        await asyncio.sleep(0.01)
    assert sorted(collector.seen) == [f"m{n}" for n in range(5)]
    assert await store.unsent_count() == 0  # confirmed, so marked sent
    await publisher.close(1.0)
    await transport.close()


async def test_confirmed_rows_of_many_commits_are_marked_sent_together(
    store: SqlSagaStore,
) -> None:
    """A transaction per hop only to mark its messages sent would cost as much as the
    hop's own: the confirms of commits close together are marked in one statement, well
    within the grace, and what still waits is marked when the publisher closes."""
    transport = MemoryTransport()
    collector = Collector()
    await transport.consume("work", collector)
    marks: list[int] = []
    mark = store.mark_sent_messages

    async def counted(ids: Sequence[str]) -> None:
        marks.append(len(ids))
        await mark(ids)

    store.mark_sent_messages = counted  # type: ignore[method-assign]
    publisher = OutboxPublisher(store, transport, grace=1.0)
    publisher.attach()
    for n in range(10):
        async with store.unit() as unit:
            await unit.enqueue([message(n)])
        await asyncio.sleep(0.005)
    await asyncio.sleep(publisher.mark_delay + 0.2)
    assert len(collector.seen) == 10 and await store.unsent_count() == 0
    assert sum(marks) == 10 and len(marks) <= 3, marks
    async with store.unit() as unit:
        await unit.enqueue([message(10)])
    for _ in range(100):
        if len(collector.seen) == 11:
            break
        await asyncio.sleep(0.005)
    await publisher.close(1.0)  # marks the last one now, without waiting out the delay
    assert await store.unsent_count() == 0
    await transport.close()


async def test_a_confirm_that_took_half_the_grace_is_marked_at_once(
    store: SqlSagaStore,
) -> None:
    """The relay takes a row once its grace has passed: a row confirmed late must not
    wait for the next ones to be marked with them, or the relay would send it again."""
    transport = MemoryTransport()
    loop = asyncio.get_running_loop()
    handled: list[float] = []

    async def slow(deliveries: Sequence[Delivery]) -> None:
        await asyncio.sleep(2.1)  # over the in-process transport, the confirm waits for it
        handled.append(loop.time())

    await transport.consume("work", slow)
    marked: list[float] = []
    mark = store.mark_sent_messages

    async def stamped(ids: Sequence[str]) -> None:
        marked.append(loop.time())
        await mark(ids)

    store.mark_sent_messages = stamped  # type: ignore[method-assign]
    publisher = OutboxPublisher(store, transport, grace=4.0)  # marks wait 0.4 s otherwise
    publisher.attach()
    async with store.unit() as unit:
        await unit.enqueue([message(1)])
    for _ in range(300):
        if marked:
            break
        await asyncio.sleep(0.01)
    assert handled and marked
    assert marked[0] - handled[0] < publisher.mark_delay / 2
    assert await store.unsent_count() == 0
    await publisher.close(1.0)
    await transport.close()


async def test_a_sagas_later_message_waits_behind_the_one_left_to_the_relay(
    store: SqlSagaStore,
) -> None:
    transport = Broken(1)
    collector = Collector()
    await transport.consume("work", collector)
    publisher = OutboxPublisher(store, transport, grace=0.5)
    publisher.attach()
    async with store.unit() as unit:
        await unit.enqueue([message(1)])  # its publish fails
    await asyncio.sleep(0.05)
    async with store.unit() as unit:
        await unit.enqueue([message(1, then="-next"), message(2)])
    await asyncio.sleep(0.05)
    assert collector.seen == ["m2"]  # another saga's message is not held up
    relay = OutboxRelay(store, transport, caught_up=publisher.caught_up)
    assert await relay.drain() == 0  # the publisher's still
    await asyncio.sleep(0.5)
    assert await relay.drain() == 2
    assert collector.seen == ["m2", "m1", "m1-next"]
    await relay.drain()  # finds nothing: the pair is the publisher's again
    async with store.unit() as unit:
        await unit.enqueue([message(1, then="-last")])
    for _ in range(200):
        if len(collector.seen) == 4:
            break
        await asyncio.sleep(0.01)
    assert collector.seen[-1] == "m1-last"
    await publisher.close(1.0)  # marks what it had confirmed
    assert await store.unsent_count() == 0
    await transport.close()


async def test_a_process_dying_between_commit_and_publish_loses_nothing(
    store: SqlSagaStore,
) -> None:
    """The commit's hook fires but nothing is ever published (the process died right
    after its commit): the rows wait out the grace, then the relay sends each once."""
    transport = MemoryTransport()
    collector = Collector()
    await transport.consume("work", collector)
    store.publish_on_commit(lambda messages: None, grace=0.3)
    async with store.unit() as unit:
        await unit.enqueue([message(n) for n in range(3)])
    store.publish_on_commit(None)
    relay = OutboxRelay(store, transport)
    assert await relay.drain() == 0  # still the publisher's to send
    await asyncio.sleep(0.35)
    assert await relay.drain() == 3
    assert await relay.drain() == 0
    assert sorted(collector.seen) == ["m0", "m1", "m2"]
    assert await store.unsent_count() == 0
    await transport.close()


async def test_a_second_runtime_on_the_same_store_leaves_its_publisher_alone(
    store: SqlSagaStore,
) -> None:
    """Commits go to the transport of the runtime that attached first: a second runtime
    over the same store object must not take them to its own transport."""
    await create_effects(store)
    first, second = MemoryTransport(), MemoryTransport()
    one = Runtime(first).add(Orchestrator(store, [ORDER]), *order_participants(store))
    other = Runtime(second).add(Orchestrator(store, [ORDER], group="other"))
    async with one, other:
        assert list(one.publishers) and not other.publishers
    assert store.publisher_grace is None  # the owner's stop detached it
