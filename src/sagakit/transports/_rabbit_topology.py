"""The queues a RabbitMQ transport declares: durable quorum work queues, each with its
delay tiers, remembered so that a teardown removes exactly what was declared.

A delay tier is a quorum queue whose message TTL is the tier's delay and whose dead-letter
route leads back to its work queue (see :mod:`sagakit.transports.rabbitmq`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aio_pika.abc

from sagakit.transports._amqp import translated

if TYPE_CHECKING:
    from sagakit.transports.rabbitmq import RabbitTransport

#: The arguments of every queue the transport uses: replicated, and a message is
#: confirmed once a majority of the replicas wrote it.
QUORUM: dict[str, Any] = {"x-queue-type": "quorum"}


class RabbitTopology:
    """Declares a transport's queues on its topology channel and keeps their names."""

    def __init__(self, transport: RabbitTransport) -> None:
        self._transport = transport
        #: The broker's names of the queues declared so far (a teardown deletes them).
        self.declared: set[str] = set()

    async def queue(self, queue: str, arguments: dict[str, Any]) -> aio_pika.abc.AbstractQueue:
        """Declare one of our queues (``queue`` before the prefix); driver errors pass."""
        name = self._transport.name(queue)
        declared = await self._transport.topology.declare_queue(
            name, durable=True, arguments=arguments
        )
        self.declared.add(name)
        return declared

    async def work_queue(self, queue: str) -> aio_pika.abc.AbstractQueue:
        """Declare a work queue and its delay tiers."""
        async with translated(f"declaring queue {queue!r}"):
            declared = await self.queue(queue, QUORUM)
            for tier, delay in enumerate(self._transport.retry_tiers, start=1):
                await self.queue(f"{queue}.retry.{tier}", self._tier(queue, delay))
        return declared

    def _tier(self, queue: str, delay: float) -> dict[str, Any]:
        """The arguments of a delay tier of ``queue`` that holds messages ``delay`` seconds."""
        return {
            **QUORUM,
            "x-message-ttl": max(round(delay * 1000), 0),
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self._transport.name(queue),
            # at-least-once needs reject-publish: the broker may not drop
            # a message to make room for another.
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }

    async def delete_queues(self) -> None:
        """Delete every queue declared so far, their messages with them; driver errors pass."""
        for name in sorted(self.declared):
            await self._transport.topology.queue_delete(name)
        self.declared.clear()
