"""Duplicated and reordered deliveries on the real wire, without losing a message.

``sagakit.testing.FaultyTransport`` holds a reordered message in memory and reports it
confirmed at once: in one process that is a late message, but in a process the nemesis
SIGKILLs it is a lost one, a fault this harness does not mean to inject (a lost event
strands a choreographed saga for good). So here the detour runs through the broker: a
reordered message, or the second copy of a duplicated one, is published into a delay
queue whose message TTL dead-letters it to where it was going, and the publish is
reported confirmed only once the broker confirmed that detour. Messages published later
overtake it; a relay killed meanwhile publishes the row again, as it would anyway.

The harness asks its child processes for this through one environment variable, which
``sagakit_shop.distributed.run_service`` (the service entry) reads: :class:`ServiceChaos`.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aio_pika
import aio_pika.abc
from aiormq.exceptions import AMQPError, DeliveryError, PublishError

from sagakit import TransportError
from sagakit.model.messages import EVENTS, TransportMessage, split_destination
from sagakit.ports import BatchHandler, DeadLetterQueue, PublishResult, Subscription
from sagakit.testing import FaultCounts, Faults
from sagakit.transports.rabbitmq import RabbitTransport

#: The environment variable carrying a child's :class:`ServiceChaos` as JSON.
CHAOS_ENV = "SAGAKIT_CHAOS"

#: Seconds a detour takes, one delay queue each (per destination kind).
DETOURS: tuple[float, ...] = (0.1, 0.4, 1.5)

#: What the driver raises when the broker or the connection fails us.
_DRIVER_ERRORS = (AMQPError, OSError, RuntimeError)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceChaos:
    """What the harness asks of one child process: wire faults, and a planted bug."""

    duplicate: float = 0.0
    reorder: float = 0.0
    seed: int = 0
    plant: str | None = None
    #: A directory where the process keeps its wire-fault counts (one file per process).
    counts: str | None = None

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, value: str) -> ServiceChaos:
        try:
            return cls(**json.loads(value))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{CHAOS_ENV} is not a chaos option object: {exc}") from exc

    @property
    def wire(self) -> bool:
        return self.duplicate > 0 or self.reorder > 0

    def faults_for(self, process: str) -> Faults:
        # Each process, and each start of it, rolls its own dice from the run's seed.
        mixed = zlib.crc32(f"{self.seed}/{process}/{os.getpid()}".encode())
        return Faults(duplicate=self.duplicate, reorder=self.reorder, seed=mixed)


def detour_queue(kind: str, index: int) -> str:
    """A delay queue (before the prefix) for ``kind`` "queue" or "events" destinations."""
    return f"chaos.detour.{kind}.{index}"


def detour_names() -> list[str]:
    """Every queue and exchange the detours use (before the prefix)."""
    return [detour_queue(kind, i) for kind in ("queue", "events") for i in range(len(DETOURS))]


class WireFaults:
    """A RabbitTransport that duplicates and reorders what it publishes, under a seed."""

    def __init__(
        self, inner: RabbitTransport, faults: Faults, *, counts_file: Path | None = None
    ) -> None:
        self.inner = inner
        self.faults = faults
        self.counts = FaultCounts()
        self._rng = random.Random(faults.seed)  # noqa: S311 - seeded faults, not security
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._exchanges: dict[str, aio_pika.abc.AbstractExchange] = {}
        self._counts_file = counts_file
        self._written = 0.0

    @property
    def dead_letters(self) -> DeadLetterQueue:
        return self.inner.dead_letters

    async def start(self) -> None:
        await self.inner.start()
        try:
            self._channel = await self.inner.connection.channel(publisher_confirms=True)
            self._exchanges = await declare_detours(self.inner, self._channel)
        except _DRIVER_ERRORS as exc:
            raise TransportError(f"declaring the chaos detours: {exc}") from exc

    async def close(self) -> None:
        self._save_counts(force=True)
        await self.inner.close()

    async def declare(self, queue: str) -> None:
        await self.inner.declare(queue)

    async def bind(self, queue: str, pattern: str) -> None:
        await self.inner.bind(queue, pattern)

    async def consume(
        self, queue: str, handler: BatchHandler, *, prefetch: int = 64, concurrency: int = 1
    ) -> Subscription:
        return await self.inner.consume(queue, handler, prefetch=prefetch, concurrency=concurrency)

    async def publish(self, messages: Sequence[TransportMessage]) -> PublishResult:
        direct: list[TransportMessage] = []
        detours: list[tuple[TransportMessage, int]] = []
        for message in messages:
            self.counts.published += 1
            if self._rng.random() < self.faults.reorder:
                self.counts.reordered += 1
                detours.append((message, self._rng.randrange(len(DETOURS))))
                continue
            direct.append(message)
            if self._rng.random() < self.faults.duplicate:
                self.counts.duplicated += 1
                detours.append((message, self._rng.randrange(len(DETOURS))))
        sending = self.inner.publish(direct) if direct else _nothing()
        outcomes = await asyncio.gather(
            sending, *(self._detour(m, i) for m, i in detours), return_exceptions=True
        )
        self._save_counts()
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        result = outcomes[0]
        assert isinstance(result, PublishResult)
        failed = dict(result.failed)
        for (message, _), refused in zip(detours, outcomes[1:], strict=True):
            if refused is not None:
                failed[message.message_id] = str(refused)
        # A message counts as confirmed only when every copy of it is in the broker's hands
        # (the inner transport confirms each message it does not fail, or raises).
        confirmed = {m.message_id for m in messages if m.message_id not in failed}
        return PublishResult(confirmed=confirmed, failed=failed)

    async def _detour(self, message: TransportMessage, index: int) -> str | None:
        exchange, key = split_destination(message.destination)
        kind = "events" if exchange == EVENTS else "queue"
        target = key if exchange == EVENTS else self.inner.name(key)
        detour = self._exchanges[detour_queue(kind, index)]
        amqp = aio_pika.Message(
            message.body,
            message_id=message.message_id,
            headers=dict(message.headers),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        try:
            async with asyncio.timeout(self.inner.publish_timeout):
                await detour.publish(amqp, target, mandatory=True)
        except (PublishError, DeliveryError) as exc:
            return f"detour refused: {exc}"
        except (*_DRIVER_ERRORS, TimeoutError) as exc:
            raise TransportError(f"publishing a detour: {type(exc).__name__}: {exc}") from exc
        return None

    def _save_counts(self, *, force: bool = False) -> None:
        if self._counts_file is None:
            return
        now = time.monotonic()
        if not force and now - self._written < 1.0:
            return
        self._written = now
        c = self.counts
        data = {"published": c.published, "duplicated": c.duplicated, "reordered": c.reordered}
        self._counts_file.write_text(json.dumps(data))


async def _nothing() -> PublishResult:
    return PublishResult(confirmed=set())


async def declare_detours(
    transport: RabbitTransport, channel: aio_pika.abc.AbstractChannel
) -> dict[str, aio_pika.abc.AbstractExchange]:
    """The delay queues and the fanout exchanges in front of them, by unprefixed name.

    A message keeps the routing key it was published with, so when its TTL runs out it
    is dead-lettered to the default exchange (a queue) or the events exchange (a topic)
    under that key."""
    exchanges = {}
    targets = {"queue": "", "events": transport.name(EVENTS)}
    await channel.declare_exchange(
        transport.name(EVENTS), aio_pika.ExchangeType.TOPIC, durable=True
    )
    for kind, target in targets.items():
        for index, delay in enumerate(DETOURS):
            name = transport.name(detour_queue(kind, index))
            exchange = await channel.declare_exchange(
                name, aio_pika.ExchangeType.FANOUT, durable=True
            )
            arguments: dict[str, Any] = {
                "x-queue-type": "quorum",
                "x-message-ttl": round(delay * 1000),
                "x-dead-letter-exchange": target,
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            }
            queue = await channel.declare_queue(name, durable=True, arguments=arguments)
            await queue.bind(exchange)
            exchanges[detour_queue(kind, index)] = exchange
    return exchanges


def wrap(transport: Any, process: str, chaos: ServiceChaos) -> Any:
    """``transport`` with ``chaos``'s wire faults, when it asks for any."""
    if not chaos.wire:
        return transport
    if not isinstance(transport, RabbitTransport):
        raise TypeError("wire faults need the RabbitMQ transport (an amqp:// broker URL)")
    counts = None
    if chaos.counts:
        counts = Path(chaos.counts) / f"wire-{process}-{os.getpid()}.json"
    return WireFaults(transport, chaos.faults_for(process), counts_file=counts)
