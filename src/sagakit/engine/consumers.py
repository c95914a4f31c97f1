"""What a runtime runs on a transport: the :class:`Consumer` protocol, the queues its
consumers need before anything is published, and a subscription for each."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from sagakit.ports import Delivery, SagaStore, Subscription, Transport


class Consumer(Protocol):
    """What the runtime runs: something with a store, a queue, and a batch handler.

    Orchestrators, participants, choreographed participants and trackers all are.
    ``bindings`` are event patterns the queue also receives.
    """

    @property
    def store(self) -> SagaStore: ...

    @property
    def queue(self) -> str: ...

    @property
    def bindings(self) -> Sequence[str]: ...

    async def handle(self, deliveries: Sequence[Delivery]) -> None: ...


async def declare_queues(transport: Transport, consumers: Iterable[Consumer]) -> None:
    """Declare every queue before anything is published: the consumers' own, and every
    queue of a choreography they take part in (an event is delivered only to the queues
    bound when it is published; see Choreography.topology)."""
    topology: dict[str, set[str]] = {}
    for consumer in consumers:
        topology.setdefault(consumer.queue, set()).update(consumer.bindings)
        for queue, patterns in getattr(consumer, "topology", {}).items():
            topology.setdefault(queue, set()).update(patterns)
    for queue, patterns in topology.items():
        await transport.declare(queue)
        for pattern in sorted(patterns):
            await transport.bind(queue, pattern)


async def subscribe(transport: Transport, consumer: Consumer, *, prefetch: int) -> Subscription:
    """Start ``consumer`` on its queue."""
    # A participant handles several batches at once, so a handler that hangs holds its
    # own batch and not the participant (Participant.concurrency).
    return await transport.consume(
        consumer.queue,
        consumer.handle,
        prefetch=prefetch,
        concurrency=getattr(consumer, "concurrency", 1),
    )
