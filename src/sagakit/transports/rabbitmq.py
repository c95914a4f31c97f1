"""The RabbitMQ transport: quorum queues, confirmed mandatory publishes, retry tiers.

``publish`` reports a message as confirmed only once the broker routed it to a queue
and took responsibility for it (a quorum queue confirms once a majority of its replicas
wrote it); an unroutable or refused message is reported failed, so its outbox row stays.
Messages published together for one destination travel as bundles
(:mod:`sagakit.transports._rabbit_publishing`).

A batch whose handler raised is neither requeued (that would redeliver it at once, in a
hot loop) nor held in memory for a while: each message is republished to a delay-tier
queue of its work queue, whose message TTL dead-letters it back to the work queue once
the tier's delay has passed. The tiers are quorum queues that dead-letter at-least-once,
so a broker crash cannot lose a message waiting for its retry.

:class:`RabbitTransport` owns the connection and its channels: one that declares the
queues and their delay tiers (:mod:`sagakit.transports._rabbit_topology`), one that
publishes with confirms, and one per consumer
(:mod:`sagakit.transports._rabbit_consumer`: batches, acks, retry tiers and dead
letters). The connection is aio-pika's robust one: it reconnects by itself and restores
the channels, queues, bindings and consumers declared on it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence

import aio_pika
import aio_pika.abc

from sagakit.model.messages import EVENTS, TransportMessage, split_destination
from sagakit.ports import DEFAULT_RETRY_TIERS, BatchHandler, DeadLetterQueue, PublishResult
from sagakit.transports._amqp import DRIVER_ERRORS, NotStartedError, translated
from sagakit.transports._rabbit_consumer import RabbitConsumer, RabbitSubscription
from sagakit.transports._rabbit_dead_letters import DEAD_LETTER_QUEUE, RabbitDeadLetters
from sagakit.transports._rabbit_publishing import (
    bundles_of,
    carrier,
    confirmations,
    send_confirmed,
)
from sagakit.transports._rabbit_topology import QUORUM, RabbitTopology


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
        self._queues = RabbitTopology(self)
        self._subscriptions: list[RabbitSubscription] = []
        self._dead_letters = RabbitDeadLetters(self)

    @property
    def dead_letters(self) -> DeadLetterQueue:
        return self._dead_letters

    async def nobody_serves(self, queue: str) -> str | None:
        """Why nothing serves ``queue`` (None when the broker has it: some process
        declared it as it consumed): what a runtime's start warns about."""
        from sagakit.transports.rabbit_namespace import probe

        broker_name = self.name(queue)
        if await probe(self.connection, broker_name) is not None:
            return None
        return f"the broker has no queue {broker_name!r} (no process has served it yet)"

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
                await self._queues.queue(DEAD_LETTER_QUEUE, QUORUM)
            except BaseException:
                await self.close()
                raise

    async def close(self) -> None:
        await self._stop_consumers()
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
            await self.start()
        await self._stop_consumers()
        async with translated("tearing down queues"):
            await self._queues.delete_queues()
            if self._publisher is not None:
                await self._publisher.exchange_delete(self.name(EVENTS))
        if reopened:
            await self.close()

    async def _stop_consumers(self) -> None:
        for sub in self._subscriptions:
            await sub.stop()
        self._subscriptions.clear()

    async def declare(self, queue: str) -> None:
        await self._queues.work_queue(queue)

    async def bind(self, queue: str, pattern: str) -> None:
        declared = await self._queues.work_queue(queue)
        async with translated(f"binding {queue!r} to {pattern!r}"):
            await declared.bind(self.name(EVENTS), routing_key=pattern)

    async def send_to_queue(self, queue: str, message: aio_pika.Message) -> str | None:
        """Publish to a queue (the broker's name) through the default exchange; return
        why the broker refused it, or None once it confirmed. Driver errors pass."""
        if self._publisher is None:
            raise NotStartedError
        return await send_confirmed(
            self._publisher.default_exchange, queue, message, timeout=self.publish_timeout
        )

    async def publish(self, messages: Sequence[TransportMessage]) -> PublishResult:
        if self._publisher is None or self._events is None:
            raise NotStartedError
        bundles = bundles_of(
            messages, most=self.bundle_max, size=self.bundle_bytes, alone=self.unbundled
        )
        sends = []
        for bundle in bundles:
            amqp = carrier(bundle)
            exchange, key = split_destination(bundle[0].destination)
            if exchange == EVENTS:
                sends.append(send_confirmed(self._events, key, amqp, timeout=self.publish_timeout))
            else:
                sends.append(self.send_to_queue(self.name(key), amqp))
        outcomes = await asyncio.gather(*sends, return_exceptions=True)
        return confirmations(bundles, outcomes, f"publishing {len(messages)} message(s)")

    async def consume(
        self, queue: str, handler: BatchHandler, *, prefetch: int = 64, concurrency: int = 1
    ) -> RabbitSubscription:
        await self.declare(queue)
        consumer = RabbitConsumer(self, queue, handler, prefetch=prefetch)
        sub = await consumer.subscribe(concurrency=concurrency)
        self._subscriptions.append(sub)
        return sub


__all__ = ["DEAD_LETTER_QUEUE", "RabbitDeadLetters", "RabbitSubscription", "RabbitTransport"]
