"""The RabbitMQ transport: quorum queues, confirmed mandatory publishes, retry tiers.

``publish`` reports a message as confirmed only once the broker routed it to a queue
and took responsibility for it (a quorum queue confirms once a majority of its replicas
wrote it); an unroutable or refused message is reported failed, so its outbox row stays.

Messages published together for the same queue (or event routing key) travel as one
bundle (``_amqp.bundled``), up to ``bundle_max`` messages and ``bundle_bytes`` bytes:
one broker message, one confirm, one ack for many saga messages, which is most of what
a message costs the relay, the broker and each consumer. A queue named in ``unbundled``
(one served by a consumer that reads only plain messages, see docs/protocol.md) gets
every message on its own. A consumer unpacks a bundle
into one delivery per message; each gets its own verdict (a dead letter or a retry
copy is published for that message alone) and the bundle is acked once every one of
its messages is dealt with. A consumer that dies first gets the whole bundle again,
and its inbox answers the messages it had already handled.

A batch whose handler raised is neither requeued (that would redeliver it at once, in a
hot loop) nor held in memory for a while: each message is republished to a delay-tier
queue of its work queue, whose message TTL dead-letters it back to the work queue once
the tier's delay has passed. The tiers are quorum queues that dead-letter at-least-once,
so a broker crash cannot lose a message waiting for its retry.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from typing import Any

import aio_pika
import aio_pika.abc
from aiormq.exceptions import DeliveryError, PublishError
from pamqp.commands import Basic

from sagakit.errors import TransportError
from sagakit.model.messages import EVENTS, TransportMessage, event_destination, split_destination
from sagakit.observe.logs import get_logger
from sagakit.ports import (
    DEFAULT_RETRY_TIERS,
    BatchHandler,
    DeadLetter,
    DeadLetterQueue,
    Delivery,
    PublishResult,
)
from sagakit.transports._amqp import (
    ATTEMPT,
    BUNDLE,
    DESTINATION,
    DRIVER_ERRORS,
    NotStartedError,
    attempt_of,
    bundled,
    envelope_headers,
    is_bundle,
    is_live,
    outgoing,
    raise_translated,
    text,
    translated,
    unbundled,
)
from sagakit.transports._consumers import Batches, cancelling
from sagakit.transports._rabbit_dead_letters import DEAD_LETTER_QUEUE, RabbitDeadLetters

log = get_logger("sagakit.transport")

_QUORUM: dict[str, Any] = {"x-queue-type": "quorum"}


class RabbitSubscription:
    """One consumer on its own channel, so its prefetch is its own."""

    def __init__(
        self,
        channel: aio_pika.abc.AbstractChannel,
        queue: aio_pika.abc.AbstractQueue,
        tag: str,
        taker: asyncio.Task[None],
        batches: Batches,
    ) -> None:
        self.channel = channel
        self.queue = queue
        self.tag = tag
        self.taker = taker
        self.batches = batches
        self.stopped = False

    async def stop(self, *, grace: float = 0.0) -> None:
        """Take no more deliveries; give the batches in hand ``grace`` seconds (see
        Batches.wind_down); what they did not settle goes back to the broker."""
        if self.stopped:
            return
        self.stopped = True
        with contextlib.suppress(*DRIVER_ERRORS):
            await self.queue.cancel(self.tag)
        await self.batches.wind_down(self.taker, grace=grace)
        # Closing the channel gives every unacknowledged delivery back to the broker.
        with contextlib.suppress(*DRIVER_ERRORS):
            await self.channel.close()


class RabbitTransport:
    """Durable quorum queues on RabbitMQ, with publisher confirms and retry tiers.

    ``prefix`` is put before every queue and exchange name this transport uses, so
    several systems (or test runs) can share one broker without seeing each other.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "",
        retry_tiers: Sequence[float] = DEFAULT_RETRY_TIERS,
        max_deliveries: int = 6,
        publish_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        reconnect_interval: float = 1.0,
        connection_name: str = "sagakit",
        bundle_max: int = 256,
        bundle_bytes: int = 1 << 20,
        unbundled: Iterable[str] = (),
    ) -> None:
        if not retry_tiers:
            raise ValueError("retry_tiers needs at least one delay")
        self.url = url
        self.prefix = prefix
        self.retry_tiers = tuple(retry_tiers)
        self.max_deliveries = max_deliveries
        self.publish_timeout = publish_timeout
        self.connect_timeout = connect_timeout
        self.reconnect_interval = reconnect_interval
        self.connection_name = connection_name
        #: At most this many messages, and about this many bytes, per bundle; a
        #: ``bundle_max`` of 1 sends every message on its own.
        self.bundle_max = max(bundle_max, 1)
        self.bundle_bytes = bundle_bytes
        #: Queues (our names, before the prefix) whose messages always travel alone.
        self.unbundled = frozenset(unbundled)
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._topology: aio_pika.abc.AbstractRobustChannel | None = None
        self._publisher: aio_pika.abc.AbstractRobustChannel | None = None
        self._events: aio_pika.abc.AbstractExchange | None = None
        self._declared: set[str] = set()
        self._subscriptions: list[RabbitSubscription] = []
        self._dead_letters = RabbitDeadLetters(self)

    @property
    def dead_letters(self) -> DeadLetterQueue:
        return self._dead_letters

    def name(self, name: str) -> str:
        """The broker's name for one of our queues or exchanges."""
        return self.prefix + name

    def tier_queue(self, queue: str, tier: int) -> str:
        """The broker's name of ``queue``'s delay tier ``tier`` (counted from 1)."""
        return self.name(f"{queue}.retry.{tier}")

    @property
    def connection(self) -> aio_pika.abc.AbstractRobustConnection:
        if self._connection is None:
            raise NotStartedError
        return self._connection

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up now (not before start, after close, or
        while it reconnects)."""
        connection = self._connection
        if connection is None or connection.is_closed:
            return False
        underlay = connection.transport
        return underlay is not None and not underlay.connection.is_closed

    @property
    def topology(self) -> aio_pika.abc.AbstractRobustChannel:
        if self._topology is None:
            raise NotStartedError
        return self._topology

    async def start(self) -> None:
        if self._connection is not None:
            return
        async with translated("connecting to RabbitMQ"):
            self._connection = await aio_pika.connect_robust(
                self.url,
                timeout=self.connect_timeout,
                reconnect_interval=self.reconnect_interval,
                client_properties={"connection_name": self.connection_name},
            )
            try:
                self._topology = await self._connection.channel(publisher_confirms=False)
                self._publisher = await self._connection.channel(
                    publisher_confirms=True, on_return_raises=True
                )
                self._events = await self._publisher.declare_exchange(
                    self.name(EVENTS), aio_pika.ExchangeType.TOPIC, durable=True
                )
                await self._declare_queue(DEAD_LETTER_QUEUE, _QUORUM)
            except BaseException:
                await self.close()
                raise

    async def close(self) -> None:
        for sub in self._subscriptions:
            await sub.stop()
        self._subscriptions.clear()
        connection, self._connection = self._connection, None
        self._topology = self._publisher = self._events = None
        if connection is not None:
            with contextlib.suppress(*DRIVER_ERRORS):
                await connection.close()

    async def teardown(self) -> None:
        """Delete every queue and exchange this transport declared (for tests); works
        after ``close()`` too, by connecting once more."""
        reopened = self._connection is None
        if reopened:
            declared = set(self._declared)
            await self.start()
            self._declared |= declared
        for sub in self._subscriptions:
            await sub.stop()
        self._subscriptions.clear()
        async with translated("tearing down queues"):
            for name in sorted(self._declared):
                await self.topology.queue_delete(name)
            self._declared.clear()
            if self._publisher is not None:
                await self._publisher.exchange_delete(self.name(EVENTS))
        if reopened:
            await self.close()

    async def _declare_queue(
        self, queue: str, arguments: dict[str, Any]
    ) -> aio_pika.abc.AbstractQueue:
        name = self.name(queue)
        declared = await self.topology.declare_queue(name, durable=True, arguments=arguments)
        self._declared.add(name)
        return declared

    async def declare(self, queue: str) -> None:
        await self._declare_work_queue(queue)

    async def _declare_work_queue(self, queue: str) -> aio_pika.abc.AbstractQueue:
        async with translated(f"declaring queue {queue!r}"):
            declared = await self._declare_queue(queue, _QUORUM)
            for tier, delay in enumerate(self.retry_tiers, start=1):
                await self._declare_queue(
                    f"{queue}.retry.{tier}",
                    {
                        **_QUORUM,
                        "x-message-ttl": max(round(delay * 1000), 0),
                        "x-dead-letter-exchange": "",
                        "x-dead-letter-routing-key": self.name(queue),
                        # at-least-once needs reject-publish: the broker may not drop
                        # a message to make room for another.
                        "x-dead-letter-strategy": "at-least-once",
                        "x-overflow": "reject-publish",
                    },
                )
        return declared

    async def bind(self, queue: str, pattern: str) -> None:
        declared = await self._declare_work_queue(queue)
        async with translated(f"binding {queue!r} to {pattern!r}"):
            await declared.bind(self.name(EVENTS), routing_key=pattern)

    async def send_to_queue(self, queue: str, message: aio_pika.Message) -> str | None:
        """Publish to a queue (the broker's name) through the default exchange; return
        why the broker refused it, or None once it confirmed. Driver errors pass."""
        if self._publisher is None:
            raise NotStartedError
        return await self._send(self._publisher.default_exchange, queue, message)

    async def _send(
        self, exchange: aio_pika.abc.AbstractExchange, key: str, message: aio_pika.Message
    ) -> str | None:
        try:
            # The timeout also covers waiting for a lost connection to come back.
            async with asyncio.timeout(self.publish_timeout):
                await exchange.publish(message, key, mandatory=True)
        except PublishError as exc:
            frame = exc.frame
            why = frame.reply_text if isinstance(frame, Basic.Return) else "returned"
            return f"unroutable: {why}: nothing bound to {key!r}"
        except DeliveryError as exc:
            return f"refused by the broker: {exc}"
        return None

    async def publish(self, messages: Sequence[TransportMessage]) -> PublishResult:
        if self._publisher is None or self._events is None:
            raise NotStartedError
        routes: dict[str, list[TransportMessage]] = {}
        for message in messages:
            routes.setdefault(message.destination, []).append(message)
        bundles = [b for group in routes.values() for b in self._bundles(group)]
        sends = []
        for bundle in bundles:
            amqp = outgoing(bundle[0]) if len(bundle) == 1 else bundled(bundle)
            exchange, key = split_destination(bundle[0].destination)
            if exchange == EVENTS:
                sends.append(self._send(self._events, key, amqp))
            else:
                sends.append(self.send_to_queue(self.name(key), amqp))
        outcomes = await asyncio.gather(*sends, return_exceptions=True)
        result = PublishResult(confirmed=set())
        for bundle, outcome in zip(bundles, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                # Confirms for the rest are lost with the connection; the caller retries.
                raise_translated(f"publishing {len(messages)} message(s)", outcome)
            for message in bundle:
                if outcome is None:
                    result.confirmed.add(message.message_id)
                else:
                    result.failed[message.message_id] = outcome
        return result

    def _bundles(self, group: list[TransportMessage]) -> list[list[TransportMessage]]:
        """``group`` (one destination, in order) cut into bundles within the limits."""
        if group[0].destination in self.unbundled:
            return [[message] for message in group]
        bundles: list[list[TransportMessage]] = []
        size = 0
        for message in group:
            if (
                not bundles
                or len(bundles[-1]) >= self.bundle_max
                or size + len(message.body) > self.bundle_bytes
            ):
                bundles.append([])
                size = 0
            bundles[-1].append(message)
            size += len(message.body)
        return bundles

    async def consume(
        self, queue: str, handler: BatchHandler, *, prefetch: int = 64, concurrency: int = 1
    ) -> RabbitSubscription:
        await self.declare(queue)
        inbox: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()
        async with translated(f"consuming {queue!r}"):
            channel = await self.connection.channel(publisher_confirms=False)
            try:
                # Room for every batch the consumer may have in hand at once.
                await channel.set_qos(prefetch_count=prefetch * concurrency)
                declared = await channel.declare_queue(
                    self.name(queue), durable=True, arguments=_QUORUM
                )
                tag = await declared.consume(inbox.put)
            except BaseException:
                with contextlib.suppress(*DRIVER_ERRORS):
                    await channel.close()
                raise
        batches = Batches(concurrency, f"consumer of {queue}")
        taker = asyncio.create_task(
            self._deliver(queue, inbox, handler, prefetch, batches), name=f"consume {queue}"
        )
        sub = RabbitSubscription(channel, declared, tag, taker, batches)
        self._subscriptions.append(sub)
        return sub

    async def _deliver(
        self,
        queue: str,
        inbox: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage],
        handler: BatchHandler,
        prefetch: int,
        batches: Batches,
    ) -> None:
        """Cut the deliveries into batches of up to ``prefetch`` messages, each handled
        as soon as one of the consumer's slots is free."""
        while not batches.stopping:
            await batches.slot()
            try:
                batch = [await inbox.get()]
            except BaseException:
                batches.give_back()
                raise
            carried = _carries(batch[0])
            # One turn of the loop lets deliveries that arrived together reach the inbox.
            await asyncio.sleep(0)
            while carried < prefetch and not inbox.empty():
                batch.append(inbox.get_nowait())
                carried += _carries(batch[-1])
            live = [m for m in batch if is_live(m)]
            if not live or batches.stopping:
                batches.give_back()  # a stop's unhandled deliveries go back with the channel
                continue
            batches.start(self._settled(queue, live, handler, prefetch))

    async def _settled(
        self,
        queue: str,
        live: list[aio_pika.abc.AbstractIncomingMessage],
        handler: BatchHandler,
        prefetch: int,
    ) -> None:
        try:
            await self._handle(queue, live, handler, prefetch)
        except Exception as exc:
            if cancelling():
                raise asyncio.CancelledError from exc
            log.exception(f"consumer of {queue} failed to settle a batch; returning it")
            for message in live:
                if not message.processed:
                    await self._finish(queue, message, "not settled")

    def _decode(self, message: aio_pika.abc.AbstractIncomingMessage) -> list[Delivery]:
        """The deliveries an AMQP message carries: itself, or each message of a bundle (a
        bundle that cannot be read is one delivery, rejected as malformed)."""
        raw = message.headers or {}
        key = message.routing_key or ""
        if DESTINATION in raw:
            destination = text(raw[DESTINATION])
        elif message.exchange == self.name(EVENTS):
            destination = event_destination(key)
        else:
            destination = key.removeprefix(self.prefix)
        attempt = attempt_of(raw)
        headers = envelope_headers(raw)
        if is_bundle(message):
            try:
                return [Delivery(m, attempt) for m in unbundled(message.body, destination)]
            except ValueError as exc:
                whole = TransportMessage(destination, message.message_id or "", message.body)
                delivery = Delivery(whole, attempt)
                delivery.reject("malformed", str(exc))
                return [delivery]
        message_id = message.message_id or headers.get("message_id", "")
        return [Delivery(TransportMessage(destination, message_id, message.body, headers), attempt)]

    async def _handle(
        self,
        queue: str,
        batch: list[aio_pika.abc.AbstractIncomingMessage],
        handler: BatchHandler,
        prefetch: int,
    ) -> None:
        carried = [(m, self._decode(m)) for m in batch]
        # A bundle may carry more than the prefetch: the handler gets at most that many.
        ready = [d for _, ds in carried for d in ds if d.rejection is None]
        failures: dict[int, str] = {}
        for start in range(0, len(ready), prefetch):
            chunk = ready[start : start + prefetch]
            try:
                await handler(chunk)
            except Exception as exc:
                if cancelling():  # the stop cut the handler short: not its failure
                    raise
                failure = f"{type(exc).__name__}: {exc}"
                log.warning(f"consumer of {queue} failed on {len(chunk)} message(s): {failure}")
                failures.update(dict.fromkeys(map(id, chunk), failure))
        # A delivery whose channel died meanwhile is the broker's again: it comes back,
        # so a retry copy or a dead letter of it now would be a duplicate.
        held = [(m, ds) for m, ds in carried if is_live(m)]
        await asyncio.gather(*(self._settle(queue, m, ds, failures) for m, ds in held))

    async def _settle(
        self,
        queue: str,
        message: aio_pika.abc.AbstractIncomingMessage,
        deliveries: list[Delivery],
        failures: dict[int, str],
    ) -> None:
        """Send each delivery of ``message`` on that is not done (to its retry tier or the
        dead letters), then ack ``message``; if a next home refused one, give it back."""
        placed = await asyncio.gather(
            *(self._place(queue, d, failures.get(id(d))) for d in deliveries)
        )
        await self._finish(queue, message, next((r for r in placed if r is not None), None))

    async def _place(self, queue: str, delivery: Delivery, failure: str | None) -> str | None:
        """Where ``delivery`` goes after its handler: nowhere (done), a retry tier or the
        dead letters; why that place refused it, or None."""
        if failure is not None:
            return await self._retry(queue, delivery, failure)
        if delivery.rejection is not None:
            reason, detail = delivery.rejection
            return await self._dead_letter(queue, delivery, reason, detail)
        if delivery.retry_reason is not None:
            return await self._retry(queue, delivery, delivery.retry_reason)
        return None

    async def _retry(self, queue: str, delivery: Delivery, error: str) -> str | None:
        if delivery.deferred_for is not None:
            # Deferred: the first tier that waits long enough (or the longest), and the
            # same attempt, so no outage brings it to the delivery limit.
            tier = next(
                (n for n, delay in enumerate(self.retry_tiers, start=1)
                 if delay >= delivery.deferred_for),
                len(self.retry_tiers),
            )  # fmt: skip
            attempt = delivery.attempt
        elif delivery.attempt >= self.max_deliveries:
            return await self._dead_letter(queue, delivery, "delivery_limit", error)
        else:
            tier = min(delivery.attempt, len(self.retry_tiers))
            attempt = delivery.attempt + 1
        extra = {ATTEMPT: attempt, DESTINATION: delivery.message.destination}
        try:
            return await self.send_to_queue(
                self.tier_queue(queue, tier), outgoing(delivery.message, extra)
            )
        except DRIVER_ERRORS as exc:
            return f"{type(exc).__name__}: {exc}"

    async def _dead_letter(
        self, queue: str, delivery: Delivery, reason: str, detail: str
    ) -> str | None:
        letter = DeadLetter.now(delivery.message, queue, reason, detail, delivery.attempt)
        try:
            await self._dead_letters.add(letter)
        except TransportError as exc:
            return str(exc)
        log.warning(
            f"dead-lettered {letter.message.message_id} from {queue}: {reason} ({detail})",
            saga_id=letter.message.headers.get("saga_id"),
        )
        return None

    async def _finish(
        self, queue: str, message: aio_pika.abc.AbstractIncomingMessage, refused: str | None
    ) -> None:
        """Ack a delivery that is dealt with; give one whose next home refused it back to
        the queue, where it comes again with its attempt raised."""
        try:
            if refused is None:
                await message.ack()
            else:
                log.warning(f"returning {message.message_id} to {queue}: {refused}")
                await message.nack(requeue=True)
        except DRIVER_ERRORS as exc:
            # The channel is gone; the broker hands the delivery out again.
            log.warning(f"could not settle {message.message_id} on {queue}: {exc}")


def _carries(message: aio_pika.abc.AbstractIncomingMessage) -> int:
    """How many saga messages an AMQP message carries (a bundle says so in a header)."""
    count = (message.headers or {}).get(BUNDLE, 1)
    return count if isinstance(count, int) and count > 0 else 1


__all__ = ["DEAD_LETTER_QUEUE", "RabbitDeadLetters", "RabbitSubscription", "RabbitTransport"]
