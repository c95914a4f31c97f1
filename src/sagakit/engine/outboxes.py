"""Each store's outbox as a runtime looks after it, beside its relay
(:mod:`sagakit.engine.relay`): a publisher for what a transaction commits, straight
after the commit, and a loop that prunes the rows sent long ago."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from sagakit.engine.publisher import OutboxPublisher
from sagakit.observe.logs import get_logger
from sagakit.ports import SagaStore, Transport

log = get_logger("sagakit.runtime")


def attach_publisher(
    store: SagaStore, transport: Transport, *, grace: float
) -> OutboxPublisher | None:
    """A publisher on ``transport`` for ``store``'s commits, attached; None when another
    runtime in this process already publishes them."""
    if getattr(store, "publisher_grace", None) is not None:
        return None  # another runtime here publishes this store's commits on its transport
    publisher = OutboxPublisher(store, transport, grace=grace)
    publisher.attach()
    return publisher


def prune_loop(
    store: SagaStore, *, interval: float, retention: float
) -> Callable[[], Awaitable[None]]:
    """Every ``interval`` seconds, delete ``store``'s outbox rows sent more than
    ``retention`` seconds ago."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(interval)
            cutoff = time.time() - retention
            pruned = await store.prune_outbox(sent_before=cutoff)
            if pruned:
                log.info(f"pruned {pruned} sent outbox row(s) from {store.url}")

    return loop
