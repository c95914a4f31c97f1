"""One suite, every transport: the in-process transport and the real RabbitMQ pass
exactly the same tests; a few more at the end check what only a broker has.

The in-process transport confirms a publish only once a consumer acknowledged the
message, so consumers start before publishing, or the publish runs in the background.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import pytest
from aiormq.exceptions import ChannelPreconditionFailed

from sagakit.errors import TransportError
from sagakit.model.messages import TransportMessage, event_destination, new_id
from sagakit.ports import DeadLetter, Delivery, PublishResult, Transport
from sagakit.transports import open_transport
from sagakit.transports.rabbitmq import RabbitTransport
from tests.conftest import open_rabbit
from tests.contracts.conftest import MAX_DELIVERIES, TIERS

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def message(destination: str, *, traceparent: str | None = None) -> TransportMessage:
    message_id = new_id()
    headers = {"message_id": message_id, "type": "test.ping", "saga_id": f"saga-{message_id[:6]}"}
    if traceparent:
        headers["traceparent"] = traceparent
    body = json.dumps({"message_id": message_id, "payload": {"n": 1}}).encode()
    return TransportMessage(destination, message_id, body, headers)


class Recorder:
    """A batch handler that remembers what it saw, when, and in which batches."""

    def __init__(
        self,
        *,
        fail: bool = False,
        delay: float = 0.0,
        reject: Callable[[Delivery], tuple[str, str] | None] | None = None,
    ) -> None:
        self.fail = fail
        self.delay = delay
        self.reject = reject
        self.seen: list[tuple[float, Delivery]] = []
        self.batches: list[list[str]] = []

    async def __call__(self, batch: Sequence[Delivery]) -> None:
        now = asyncio.get_running_loop().time()
        self.batches.append([d.message.message_id for d in batch])
        self.seen.extend((now, d) for d in batch)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("boom: the handler's database is down")
        for delivery in batch:
            why = self.reject(delivery) if self.reject else None
            if why is not None:
                delivery.reject(*why)

    @property
    def ids(self) -> list[str]:
        return [d.message.message_id for _, d in self.seen]


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not true after {timeout}s: {check.__qualname__}")
        await asyncio.sleep(0.01)


def until(condition: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return condition()

    check.__qualname__ = getattr(condition, "__qualname__", "condition")
    return check


async def queued(
    transport: Transport, messages: list[TransportMessage]
) -> asyncio.Task[PublishResult]:
    """Publish with no consumer yet: wait for the broker's confirms, or (in-process,
    where confirms wait for the consumer) only until the messages are on their queues."""
    publishing = asyncio.create_task(transport.publish(messages))
    await asyncio.wait({publishing}, timeout=0.2)
    return publishing


# -- the contract --------------------------------------------------------------------


async def test_a_published_message_arrives_with_its_headers_and_body(transport: Transport) -> None:
    await transport.declare("orders")
    got = Recorder()
    await transport.consume("orders", got)
    sent = message("orders", traceparent=TRACEPARENT)

    result = await transport.publish([sent])

    assert result == PublishResult(confirmed={sent.message_id})
    await eventually(until(lambda: len(got.seen) == 1))
    delivery = got.seen[0][1]
    assert delivery.message == sent
    assert delivery.message.headers["traceparent"] == TRACEPARENT
    assert delivery.attempt == 1


async def test_a_message_nobody_can_receive_is_reported_failed(transport: Transport) -> None:
    await transport.declare("orders")
    await transport.consume("orders", Recorder())
    lost = message("nobody-declared-this")
    unheard = message(event_destination("nothing.is.bound"))
    fine = message("orders")

    result = await transport.publish([lost, unheard, fine])

    assert result.confirmed == {fine.message_id}
    assert set(result.failed) == {lost.message_id, unheard.message_id}
    assert all("unroutable" in why for why in result.failed.values())


async def test_competing_consumers_share_the_work_and_each_message_is_handled_once(
    transport: Transport,
) -> None:
    await transport.declare("work")
    first, second = Recorder(delay=0.005), Recorder(delay=0.005)
    await transport.consume("work", first, prefetch=1)
    await transport.consume("work", second, prefetch=1)
    sent = [message("work") for _ in range(20)]

    # Published one by one (RabbitMQ may carry messages published together as one).
    results = await asyncio.gather(*(transport.publish([m]) for m in sent))

    assert set().union(*(r.confirmed for r in results)) == {m.message_id for m in sent}
    await eventually(until(lambda: len(first.seen) + len(second.seen) >= 20))
    await asyncio.sleep(0.1)  # room for a duplicate to show up
    assert sorted(first.ids + second.ids) == sorted(m.message_id for m in sent)
    assert first.ids and second.ids


async def test_events_reach_every_queue_bound_with_a_matching_pattern_and_no_other(
    transport: Transport,
) -> None:
    patterns = {"star": "order.*", "hash": "order.#", "pay": "payment.*", "all": "#"}
    recorders = {queue: Recorder() for queue in [*patterns, "unbound"]}
    for queue, pattern in patterns.items():
        await transport.bind(queue, pattern)
    await transport.declare("unbound")
    for queue, recorder in recorders.items():
        await transport.consume(queue, recorder)
    expected = {
        "order.placed": {"star", "hash", "all"},
        "order.placed.eu": {"hash", "all"},
        "order": {"hash", "all"},
        "payment.taken": {"pay", "all"},
        "shipping.sent": {"all"},
    }
    events = {key: message(event_destination(key)) for key in expected}

    result = await transport.publish(list(events.values()))

    assert result.confirmed == {m.message_id for m in events.values()}
    total = sum(len(queues) for queues in expected.values())
    await eventually(until(lambda: sum(len(r.seen) for r in recorders.values()) >= total))
    await asyncio.sleep(0.1)  # room for a stray delivery to show up
    for queue, recorder in recorders.items():
        wanted = {events[key].message_id for key, queues in expected.items() if queue in queues}
        assert sorted(recorder.ids) == sorted(wanted), queue
    delivered = recorders["star"].seen[0][1].message
    assert delivered.destination == event_destination("order.placed")


async def test_batches_never_exceed_the_prefetch(transport: Transport) -> None:
    await transport.declare("batched")
    got = Recorder(delay=0.01)
    await transport.consume("batched", got, prefetch=4)
    sent = [message("batched") for _ in range(30)]

    await transport.publish(sent)

    await eventually(until(lambda: len(got.seen) >= 30))
    assert sorted(got.ids) == sorted(m.message_id for m in sent)
    assert max(len(batch) for batch in got.batches) <= 4
    assert any(len(batch) > 1 for batch in got.batches)  # deliveries do come in batches


async def test_a_failing_batch_comes_back_after_each_tier_then_is_dead_lettered(
    transport: Transport,
) -> None:
    await transport.declare("flaky")
    got = Recorder(fail=True)
    await transport.consume("flaky", got)
    sent = message("flaky")

    publishing = asyncio.create_task(transport.publish([sent]))

    async def dead() -> bool:
        return await transport.dead_letters.depth() == 1

    await eventually(dead)
    assert [d.attempt for _, d in got.seen] == list(range(1, MAX_DELIVERIES + 1))
    assert all(d.message == sent for _, d in got.seen)
    times = [t for t, _ in got.seen]
    for tier, (before, after) in enumerate(itertools.pairwise(times)):
        assert after - before >= TIERS[tier] * 0.9, f"attempt {tier + 2} came back too soon"
    (letter,) = await transport.dead_letters.list()
    assert letter.reason == "delivery_limit"
    assert letter.queue == "flaky"
    assert letter.attempts == MAX_DELIVERIES
    assert "boom" in letter.detail
    assert (letter.message.message_id, letter.message.body) == (sent.message_id, sent.body)
    assert letter.message.headers == sent.headers
    assert (await publishing).confirmed == {sent.message_id}
    await asyncio.sleep(TIERS[-1] * 1.5)
    assert len(got.seen) == MAX_DELIVERIES  # dead letters are not retried


async def test_a_rejected_delivery_is_dead_lettered_and_the_rest_of_its_batch_acked(
    transport: Transport,
) -> None:
    await transport.declare("strict")
    bad, good = message("strict"), [message("strict") for _ in range(2)]

    def judge(delivery: Delivery) -> tuple[str, str] | None:
        if delivery.message.message_id == bad.message_id:
            return ("schema", "payload.amount: field required")
        return None

    got = Recorder(reject=judge)
    publishing = await queued(transport, [good[0], bad, good[1]])
    await transport.consume("strict", got)

    async def dead() -> bool:
        return await transport.dead_letters.depth() == 1

    await eventually(dead)
    assert got.batches[0] == [good[0].message_id, bad.message_id, good[1].message_id]
    (letter,) = await transport.dead_letters.list()
    assert (letter.reason, letter.detail) == ("schema", "payload.amount: field required")
    assert (letter.queue, letter.attempts) == ("strict", 1)
    assert letter.message.message_id == bad.message_id
    assert (await publishing).confirmed == {m.message_id for m in [bad, *good]}
    await asyncio.sleep(TIERS[-1] * 1.5)
    assert len(got.seen) == 3  # neither the rejected one nor its batch came back


async def test_a_delivery_that_asks_to_come_back_later_does_and_alone(
    transport: Transport,
) -> None:
    await transport.declare("later")
    early, ready = message("later"), message("later")
    attempts: list[tuple[str, int]] = []

    async def handler(batch: Sequence[Delivery]) -> None:
        for delivery in batch:
            attempts.append((delivery.message.message_id, delivery.attempt))
            if delivery.message.message_id == early.message_id and delivery.attempt == 1:
                delivery.retry("arrived before the event it follows")

    publishing = await queued(transport, [early, ready])
    await transport.consume("later", handler)
    await eventually(until(lambda: (early.message_id, 2) in attempts))
    assert await publishing
    await asyncio.sleep(TIERS[-1] * 1.5)
    assert sorted(attempts) == sorted(
        [(early.message_id, 1), (ready.message_id, 1), (early.message_id, 2)]
    )
    assert await transport.dead_letters.depth() == 0


async def test_a_deferred_delivery_comes_back_later_uncounted_past_the_limit(
    transport: Transport,
) -> None:
    """An outage is not the message's fault: deferred twice as often as the delivery
    limit allows tries, it still comes back each time after the wait, as the same
    attempt, and is handled in the end rather than dead-lettered."""
    await transport.declare("waiting")
    sent = message("waiting")
    seen: list[tuple[int, float]] = []
    loop = asyncio.get_running_loop()

    async def handler(batch: Sequence[Delivery]) -> None:
        for delivery in batch:
            seen.append((delivery.attempt, loop.time()))
            if len(seen) <= 2 * MAX_DELIVERIES:
                delivery.defer("circuit breaker 'gw' is open", TIERS[1] * 0.8)

    publishing = await queued(transport, [sent])
    await transport.consume("waiting", handler)
    await eventually(until(lambda: len(seen) == 2 * MAX_DELIVERIES + 1), timeout=10)
    assert await publishing
    await asyncio.sleep(TIERS[-1] * 1.5)
    assert len(seen) == 2 * MAX_DELIVERIES + 1  # handled once it was not deferred
    assert {attempt for attempt, _ in seen} == {1}
    gaps = [later - earlier for (_, earlier), (_, later) in itertools.pairwise(seen)]
    assert min(gaps) >= TIERS[1] * 0.8 * 0.9, gaps  # it waited, give or take a timer
    assert await transport.dead_letters.depth() == 0


async def test_dead_letters_can_be_listed_fetched_replayed_and_purged(
    transport: Transport,
) -> None:
    await transport.declare("desk")
    got = Recorder()
    await transport.consume("desk", got)
    dlq = transport.dead_letters
    letters = [
        DeadLetter(
            id=new_id(),
            message=message("desk", traceparent=TRACEPARENT),
            queue="desk",
            reason="unknown_type",
            detail=f"no handler for letter {i}",
            attempts=i + 1,
            dead_at=1_700_000_000.5 + i,
        )
        for i in range(3)
    ]
    for letter in letters:
        await dlq.add(letter)

    assert await dlq.depth() == 3
    assert sorted(x.id for x in await dlq.list()) == sorted(x.id for x in letters)
    assert len(await dlq.list(limit=2)) == 2
    assert await dlq.depth() == 3  # looking took nothing away
    assert await dlq.get(letters[1].id) == letters[1]
    with pytest.raises(LookupError):
        await dlq.get("no-such-letter")

    assert await dlq.replay([letters[0].id]) == 1
    await eventually(until(lambda: len(got.seen) == 1))
    replayed = got.seen[0][1]
    assert (replayed.message, replayed.attempt) == (letters[0].message, 1)
    assert await dlq.depth() == 2

    assert await dlq.replay() == 2
    await eventually(until(lambda: len(got.seen) == 3))
    assert sorted(got.ids) == sorted(x.message.message_id for x in letters)
    assert await dlq.depth() == 0
    assert await dlq.list() == []

    for letter in letters[:2]:
        await dlq.add(letter)
    assert await dlq.purge() == 2
    assert await dlq.depth() == 0


async def test_a_dead_letter_whose_queue_is_gone_stays_a_dead_letter(
    transport: Transport,
) -> None:
    letter = DeadLetter(
        id=new_id(),
        message=message("gone"),
        queue="gone",
        reason="schema",
        detail="bad",
        attempts=1,
        dead_at=1_700_000_000.0,
    )
    await transport.dead_letters.add(letter)

    assert await transport.dead_letters.replay() == 0
    assert await transport.dead_letters.get(letter.id) == letter


async def test_a_consumer_stopped_before_acking_leaves_the_message_for_the_next(
    transport: Transport,
) -> None:
    await transport.declare("handover")
    holding = asyncio.Event()

    async def stuck(batch: Sequence[Delivery]) -> None:
        holding.set()
        await asyncio.Event().wait()

    first = await transport.consume("handover", stuck)
    sent = message("handover")
    publishing = asyncio.create_task(transport.publish([sent]))
    await asyncio.wait_for(holding.wait(), 5)

    await first.stop()
    got = Recorder()
    await transport.consume("handover", got)

    await eventually(until(lambda: got.ids == [sent.message_id]))
    assert got.seen[0][1].message == sent
    assert (await publishing).confirmed == {sent.message_id}


async def test_a_batch_that_hangs_holds_only_its_own_messages(transport: Transport) -> None:
    # With room for two batches at once, one whose handler hangs does not hold the
    # consumer: later messages are handled meanwhile, and a stop gives the hung one back.
    await transport.declare("side-by-side")
    stuck = message("side-by-side")
    rest = [message("side-by-side") for _ in range(5)]
    hung = asyncio.Event()
    handled: list[str] = []

    async def handler(batch: Sequence[Delivery]) -> None:
        if any(d.message.message_id == stuck.message_id for d in batch):
            hung.set()
            await asyncio.Event().wait()
        handled.extend(d.message.message_id for d in batch)

    consumer = await transport.consume("side-by-side", handler, prefetch=1, concurrency=2)
    first = asyncio.create_task(transport.publish([stuck]))
    await asyncio.wait_for(hung.wait(), 5)
    later = asyncio.create_task(transport.publish(rest))
    await eventually(until(lambda: len(handled) == len(rest)))
    assert sorted(handled) == sorted(m.message_id for m in rest)
    assert (await later).confirmed == {m.message_id for m in rest}
    started = asyncio.get_running_loop().time()
    await consumer.stop(grace=0.2)
    assert asyncio.get_running_loop().time() - started < 2
    got = Recorder()
    await transport.consume("side-by-side", got)
    await eventually(until(lambda: got.ids == [stuck.message_id]))
    assert (await first).confirmed == {stuck.message_id}


async def test_settled_batches_leave_nothing_for_the_next_consumer(
    transport: Transport,
) -> None:
    """Batch after batch, with some deliveries dead-lettered and some retried, every
    one is settled: a consumer that takes over finds nothing left."""
    await transport.declare("settled")
    sent = [message("settled") for _ in range(30)]
    odd = {m.message_id: n % 3 for n, m in enumerate(sent) if n % 10 in (3, 7)}

    async def handler(batch: Sequence[Delivery]) -> None:
        for delivery in batch:
            kind = odd.get(delivery.message.message_id)
            if kind is not None and delivery.attempt == 1:
                if kind == 0:
                    delivery.reject("schema", "not for us")
                else:
                    delivery.retry("too early")
            seen.append((delivery.message.message_id, delivery.attempt))

    seen: list[tuple[str, int]] = []
    publishing = await queued(transport, sent)
    first = await transport.consume("settled", handler, prefetch=8)
    retried = [i for i, kind in odd.items() if kind != 0]
    expected = len(sent) + len(retried)
    await eventually(until(lambda: len(seen) >= expected))
    assert len((await publishing).confirmed) == len(sent)
    await first.stop()
    later = Recorder()
    await transport.consume("settled", later)
    await asyncio.sleep(TIERS[-1] * 1.5)
    assert later.ids == []  # nothing was left unacked
    assert sorted(seen) == sorted([(m.message_id, 1) for m in sent] + [(i, 2) for i in retried])
    assert await transport.dead_letters.depth() == len(odd) - len(retried)


# -- what only a broker has ----------------------------------------------------------


async def test_rabbit_keeps_persistent_messages_in_quorum_queues_with_delay_tiers(
    rabbit: RabbitTransport, amqp_url: str
) -> None:
    await rabbit.declare("kept")
    sent = message("kept", traceparent=TRACEPARENT)
    assert (await rabbit.publish([sent])).confirmed == {sent.message_id}  # no consumer needed

    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(rabbit.name("kept"), passive=True)
        assert queue.declaration_result.message_count == 1
        stored = await queue.get(no_ack=False)
        assert stored.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert (stored.content_type, stored.message_id) == ("application/json", sent.message_id)
        assert {k: v for k, v in (stored.headers or {}).items() if k != "x-delivery-count"} == (
            sent.headers
        )
        await stored.nack(requeue=True)
        for tier, delay in enumerate(TIERS, start=1):
            # Same arguments: accepted. A queue is only what it was declared as.
            await channel.declare_queue(
                rabbit.tier_queue("kept", tier),
                durable=True,
                arguments={
                    "x-queue-type": "quorum",
                    "x-message-ttl": round(delay * 1000),
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": rabbit.name("kept"),
                    "x-dead-letter-strategy": "at-least-once",
                    "x-overflow": "reject-publish",
                },
            )
        with pytest.raises(ChannelPreconditionFailed):
            await channel.declare_queue(
                rabbit.name("kept"), durable=True, arguments={"x-queue-type": "classic"}
            )
    finally:
        await connection.close()


async def test_rabbit_counts_a_delivery_given_back_by_a_stopped_consumer(
    rabbit: RabbitTransport,
) -> None:
    await rabbit.declare("counted")
    holding = asyncio.Event()

    async def stuck(batch: Sequence[Delivery]) -> None:
        holding.set()
        await asyncio.Event().wait()

    first = await rabbit.consume("counted", stuck)
    await rabbit.publish([message("counted")])
    await asyncio.wait_for(holding.wait(), 5)
    await first.stop()
    got = Recorder()
    await rabbit.consume("counted", got)

    await eventually(until(lambda: len(got.seen) == 1))
    assert got.seen[0][1].attempt == 2


async def broker_messages(amqp_url: str, queue: str) -> int:
    """How many messages the broker holds in ``queue`` (its own name), as it counts them."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)
    finally:
        await connection.close()


async def test_rabbit_carries_messages_published_together_as_one_bundle(
    rabbit: RabbitTransport, amqp_url: str
) -> None:
    """Ten messages for one queue are one broker message (one confirm, one ack), yet
    the consumer gets each with its own id, headers and body, within its prefetch."""
    await rabbit.declare("bundled")
    sent = [message("bundled", traceparent=TRACEPARENT) for _ in range(10)]
    assert (await rabbit.publish(sent)).confirmed == {m.message_id for m in sent}

    assert await broker_messages(amqp_url, rabbit.name("bundled")) == 1
    got = Recorder()
    await rabbit.consume("bundled", got, prefetch=4)

    await eventually(until(lambda: len(got.seen) == 10))
    assert [d.message for _, d in got.seen] == sent  # in order, whole
    assert [len(batch) for batch in got.batches] == [4, 4, 2]
    await asyncio.sleep(TIERS[-1] * 1.5)
    assert len(got.seen) == 10  # acked once all of it was handled


async def test_rabbit_settles_each_message_of_a_bundle_on_its_own(
    rabbit: RabbitTransport,
) -> None:
    """In one bundle: a rejected message is dead-lettered alone, one that asks to come
    back comes back alone, a handler that raised on one part of it retries only that
    part, and the rest are handled once."""
    await rabbit.declare("mixed")
    sent = [message("mixed") for _ in range(6)]
    bad, later = sent[1], sent[2]
    failing = {sent[4].message_id, sent[5].message_id}  # the second batch (prefetch 4)
    seen: list[tuple[str, int]] = []

    async def handler(batch: Sequence[Delivery]) -> None:
        for delivery in batch:
            seen.append((delivery.message.message_id, delivery.attempt))
        if any(d.message.message_id in failing and d.attempt == 1 for d in batch):
            raise RuntimeError("boom")
        for delivery in batch:
            if delivery.message.message_id == bad.message_id:
                delivery.reject("schema", "payload.amount: field required")
            elif delivery.message.message_id == later.message_id and delivery.attempt == 1:
                delivery.retry("too early")

    await rabbit.publish(sent)
    await rabbit.consume("mixed", handler, prefetch=4)

    first = [(m.message_id, 1) for m in sent]
    again = [(later.message_id, 2), *((i, 2) for i in failing)]
    await eventually(until(lambda: len(seen) >= len(first) + len(again)))
    await asyncio.sleep(TIERS[-1] * 1.5)
    assert sorted(seen) == sorted(first + again)
    (letter,) = await rabbit.dead_letters.list()
    assert (letter.message.message_id, letter.reason) == (bad.message_id, "schema")
    assert letter.message.headers == bad.headers


async def test_rabbit_dead_letters_a_bundle_it_cannot_read_and_goes_on(
    rabbit: RabbitTransport,
) -> None:
    await rabbit.declare("garbled")
    got = Recorder()
    await rabbit.consume("garbled", got)
    assert rabbit._publisher is not None
    broken = aio_pika.Message(
        b"\x00\x00\x00\x05[[1]]trailing",
        message_id="garbled-1",
        content_type="application/vnd.sagakit.bundle",
        headers={"x-sagakit-bundle": 1},
    )
    await rabbit.send_to_queue(rabbit.name("garbled"), broken)
    fine = message("garbled")
    await rabbit.publish([fine])

    await eventually(until(lambda: len(got.seen) == 1))

    async def dead() -> bool:
        return await rabbit.dead_letters.depth() == 1

    await eventually(dead)
    assert got.ids == [fine.message_id]
    (letter,) = await rabbit.dead_letters.list()
    assert (letter.reason, letter.message.message_id) == ("malformed", "garbled-1")
    assert "not a message bundle" in letter.detail


async def test_rabbit_sends_each_message_alone_when_bundles_are_off(
    amqp_url: str,
) -> None:
    rabbit = await open_rabbit(amqp_url, retry_tiers=TIERS, bundle_max=1)
    try:
        await rabbit.declare("single")
        assert (await rabbit.publish([message("single") for _ in range(3)])).confirmed
        assert await broker_messages(amqp_url, rabbit.name("single")) == 3
    finally:
        await rabbit.teardown()
        await rabbit.close()


async def test_rabbit_sends_each_message_alone_to_a_queue_that_opts_out_of_bundles(
    amqp_url: str,
) -> None:
    """A queue served by a consumer that reads only plain messages (docs/protocol.md)
    gets each message as one AMQP message; other queues still get bundles."""
    rabbit = await open_rabbit(amqp_url, retry_tiers=TIERS, unbundled=["plain"])
    try:
        for queue in ("plain", "bundled"):
            await rabbit.declare(queue)
        sent = [message(queue) for queue in ("plain", "bundled") for _ in range(3)]
        assert (await rabbit.publish(sent)).confirmed == {m.message_id for m in sent}
        assert await broker_messages(amqp_url, rabbit.name("plain")) == 3
        assert await broker_messages(amqp_url, rabbit.name("bundled")) == 1
    finally:
        await rabbit.teardown()
        await rabbit.close()
    named = open_transport(f"{amqp_url}?unbundled=sagakit.commands.a,sagakit.commands.b")
    assert isinstance(named, RabbitTransport)
    assert named.unbundled == {"sagakit.commands.a", "sagakit.commands.b"}


class BrokerProxy:
    """A TCP proxy in front of the broker that a test can cut, and keep shut."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = upstream
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 5672
        self.refusing = False
        self._links: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        """Start listening; return the broker URL that goes through the proxy."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        parts = urlsplit(self.upstream)
        credentials = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        return urlunsplit(parts._replace(netloc=f"{credentials}127.0.0.1:{port}"))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        except OSError:
            writer.transport.abort()  # the broker is down: so is the proxy
            return
        self._links.update((writer, up_writer))
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()
            self._links.discard(writer)

    def cut(self) -> None:
        """Drop every connection through the proxy, as a network failure would."""
        for writer in list(self._links):
            writer.transport.abort()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def test_rabbit_survives_a_lost_connection(amqp_url: str) -> None:
    proxy = BrokerProxy(amqp_url)
    proxied = await proxy.start()
    rabbit = await open_rabbit(proxied, reconnect_interval=0.2, publish_timeout=0.5)
    try:
        await rabbit.declare("steady")
        holding, release = asyncio.Event(), asyncio.Event()
        seen: list[Delivery] = []

        async def handler(batch: Sequence[Delivery]) -> None:
            seen.extend(batch)
            if not holding.is_set():
                holding.set()
                await release.wait()

        await rabbit.consume("steady", handler)
        held = message("steady")
        assert (await rabbit.publish([held])).confirmed == {held.message_id}
        await asyncio.wait_for(holding.wait(), 5)

        proxy.refusing = True
        proxy.cut()
        with pytest.raises(TransportError) as raised:
            await rabbit.publish([message("steady")])
        assert raised.value.retryable
        release.set()  # the handler returns, but its ack has nowhere to go

        proxy.refusing = False
        after = message("steady")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        refusals: list[TransportError] = []
        while True:
            try:
                if (await rabbit.publish([after])).confirmed:
                    break
            except TransportError as exc:
                refusals.append(exc)  # still reconnecting
            assert loop.time() < deadline, "no confirm after the connection came back"
            await asyncio.sleep(0.05)
        assert all(refusal.retryable for refusal in refusals)

        # The restored consumer gets the new message, and the one it held when the
        # connection died again, counted as a second attempt.
        await eventually(until(lambda: after.message_id in [d.message.message_id for d in seen]))
        await eventually(until(lambda: len(seen) == 3))
        again = [d for d in seen if d.message.message_id == held.message_id]
        assert [d.attempt for d in again] == [1, 2]
    finally:
        proxy.refusing = False
        await rabbit.teardown()
        await rabbit.close()
        await proxy.close()


async def test_rabbit_unreachable_is_a_retryable_transport_error() -> None:
    unreachable = RabbitTransport("amqp://guest:guest@127.0.0.1:1/", connect_timeout=2)
    with pytest.raises(TransportError) as raised:
        await unreachable.start()
    assert raised.value.retryable
    assert isinstance(raised.value.__cause__, OSError | aio_pika.exceptions.AMQPError)


def test_open_transport_reads_the_prefix_from_an_amqp_url(amqp_url: str) -> None:
    opened = open_transport(f"{amqp_url}?prefix=shop-a.&heartbeat=30")
    assert isinstance(opened, RabbitTransport)
    assert opened.prefix == "shop-a."
    assert opened.url == f"{amqp_url}?heartbeat=30"
    assert opened.name("sagakit.events") == "shop-a.sagakit.events"
