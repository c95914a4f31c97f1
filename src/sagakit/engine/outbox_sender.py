"""What the outbox relay and the outbox publisher share: one store's outbox messages
published to a transport in batches, each under its messages' traces, with what the
transport confirmed counted and what it refused reported.

Which rows a batch holds, and how the confirmed ones are marked sent, is each one's own:
the relay claims rows and marks them in the claim's transaction
(:mod:`sagakit.engine.relay`); the publisher takes what a commit wrote and marks it
afterwards (:mod:`sagakit.engine.publisher`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from sagakit.model.messages import TransportMessage
from sagakit.observe import tracing
from sagakit.ports import PublishResult, SagaStore, Transport


@dataclass(slots=True)
class SendStats:
    """What a sender published: confirmed messages, and the batches they went in."""

    published: int = 0
    batches: int = 0

    def count(self, confirmed: int) -> None:
        """One batch published, ``confirmed`` of its messages confirmed."""
        self.published += confirmed
        self.batches += 1


class OutboxSender:
    """Publishes one store's outbox messages to a transport, up to ``batch_size`` a
    batch and ``max_inflight`` batches at once."""

    def __init__(
        self,
        store: SagaStore,
        transport: Transport,
        *,
        batch_size: int,
        max_inflight: int,
        log: structlog.stdlib.BoundLogger,
        refusals: str = "",
    ) -> None:
        """``refusals`` begins the warning about messages the transport refused."""
        self.store = store
        self.transport = transport
        self.batch_size = batch_size
        self.max_inflight = max_inflight
        self._log = log
        self._refusals = refusals

    async def _send(self, messages: Sequence[TransportMessage]) -> PublishResult:
        """Publish ``messages`` under their traces; warn of those the transport refused."""
        with tracing.publishing([m.headers.get("traceparent") for m in messages]):
            result = await self.transport.publish(messages)
        if result.failed:
            message_id, why = next(iter(result.failed.items()))
            self._log.warning(
                f"{self._refusals}{len(result.failed)} message(s) refused, e.g. {message_id}: {why}"
            )
        return result
