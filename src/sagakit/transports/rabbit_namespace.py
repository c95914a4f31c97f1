"""A namespace on RabbitMQ: the queues and exchange one prefix owns, asked about and removed.

The broker's management API is often not enabled, so nothing here lists the broker's
queues: the names are derived from what a system runs (its definitions' participants,
its orchestrator groups, choreography queues) and each is asked about with a passive
declare, which answers its message and consumer counts, or that it does not exist.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractConnection
from aiormq.exceptions import ChannelNotFoundEntity

from sagakit.model.definition import SagaDefinition, participants_of
from sagakit.model.messages import EVENTS, command_queue, follower_queue, reply_queue, tracker_queue
from sagakit.transports._amqp import DRIVER_ERRORS, translated
from sagakit.transports._rabbit_dead_letters import DEAD_LETTER_QUEUE
from sagakit.transports.rabbitmq import RabbitTransport

#: Delay tiers looked for past the transport's own count (an earlier run may have had more).
_SPARE_TIERS = 8


@dataclass(frozen=True, slots=True)
class QueueState:
    """One queue on the broker, as a passive declare sees it."""

    name: str
    messages: int
    consumers: int


@dataclass(frozen=True, slots=True)
class Namespace:
    """What one prefix has on the broker: its queues and whether its exchange exists."""

    prefix: str
    queues: tuple[QueueState, ...]
    exchange: str | None

    @property
    def consumers(self) -> int:
        return sum(queue.consumers for queue in self.queues)

    @property
    def empty(self) -> bool:
        return not self.queues and self.exchange is None


def work_queues(
    definitions: Iterable[SagaDefinition] = (),
    *,
    groups: Iterable[str] = ("orchestrator",),
    queues: Iterable[str] = (),
) -> list[str]:
    """Our names (before the prefix) of the work queues a system of ``definitions`` uses:
    each participant's command and choreography queues, each orchestrator group's
    replies, the choreography tracker's queue, and any ``queues`` named."""
    names = set(queues) | {tracker_queue()} | {reply_queue(group) for group in groups}
    for participant in participants_of(definitions):
        names |= {command_queue(participant), follower_queue(participant)}
    return sorted(names)


@contextlib.asynccontextmanager
async def connected(transport: RabbitTransport) -> AsyncIterator[AbstractConnection]:
    """A plain connection to the transport's broker: unlike ``transport.start()``, it
    declares nothing, so looking at a namespace does not bring its exchange back."""
    async with translated("connecting to RabbitMQ"):
        connection = await aio_pika.connect(transport.url, timeout=transport.connect_timeout)
    try:
        yield connection
    finally:
        with contextlib.suppress(*DRIVER_ERRORS):
            await connection.close()


async def probe(connection: AbstractConnection, name: str) -> QueueState | None:
    """The queue the broker calls ``name``, or None when it has none. Asked on a channel
    of its own (the broker closes a channel that asks about a missing queue), below
    aio-pika's robust layer, which would answer a known queue from its cache."""
    async with translated(f"looking up queue {name!r}"):
        channel = await connection.channel(publisher_confirms=False)
        try:
            underlay = await channel.get_underlay_channel()
            declared = await underlay.queue_declare(name, passive=True)
        except ChannelNotFoundEntity:
            return None
        finally:
            with contextlib.suppress(*DRIVER_ERRORS):
                await channel.close()
    return QueueState(name, int(declared.message_count or 0), int(declared.consumer_count or 0))


async def _exchange_exists(connection: AbstractConnection, name: str) -> bool:
    async with translated(f"looking up exchange {name!r}"):
        channel = await connection.channel(publisher_confirms=False)
        try:
            underlay = await channel.get_underlay_channel()
            await underlay.exchange_declare(name, passive=True)
        except ChannelNotFoundEntity:
            return False
        finally:
            with contextlib.suppress(*DRIVER_ERRORS):
                await channel.close()
    return True


async def survey(
    connection: AbstractConnection, transport: RabbitTransport, queues: Sequence[str]
) -> Namespace:
    """What the transport's prefix has on the broker among ``queues`` (our names), their
    delay tiers and the dead-letter queue, and its events exchange."""
    found: list[QueueState] = []
    for queue in [*queues, DEAD_LETTER_QUEUE]:
        state = await probe(connection, transport.name(queue))
        if state is not None:
            found.append(state)
        if queue == DEAD_LETTER_QUEUE:
            continue
        for tier in range(1, len(transport.retry_tiers) + _SPARE_TIERS + 1):
            tier_state = await probe(connection, transport.tier_queue(queue, tier))
            if tier_state is None:
                break
            found.append(tier_state)
    exchange = transport.name(EVENTS)
    exists = await _exchange_exists(connection, exchange)
    return Namespace(transport.prefix, tuple(found), exchange if exists else None)


async def remove(connection: AbstractConnection, namespace: Namespace) -> None:
    """Delete the namespace's queues (their messages with them) and its exchange."""
    async with translated("removing the namespace"):
        channel = await connection.channel(publisher_confirms=False)
        try:
            for queue in namespace.queues:
                await channel.queue_delete(queue.name)
            if namespace.exchange is not None:
                await channel.exchange_delete(namespace.exchange)
        finally:
            with contextlib.suppress(*DRIVER_ERRORS):
                await channel.close()
