"""A consumer on RabbitMQ: one queue's deliveries on a channel of their own, taken in
batches, handed to the handler, and settled message by message.

A bundle is unpacked into one delivery per message; each gets its own verdict (a dead
letter or a retry copy is published for that message alone) and the bundle is acked
once every one of its messages is dealt with. A consumer that dies first gets the
whole bundle again, and its inbox answers the messages it had already handled.

After its handler, a message that failed goes to a delay tier of its queue with its
attempt raised (a deferred one to the first tier that waits long enough, its attempt
kept), and one past the delivery limit, or rejected, to the dead letters.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import aio_pika.abc

from sagakit.errors import TransportError
from sagakit.model.messages import EVENTS, TransportMessage, event_destination
from sagakit.observe.logs import get_logger
from sagakit.ports import BatchHandler, DeadLetter, Delivery
from sagakit.transports._amqp import (
    ATTEMPT,
    BUNDLE,
    DESTINATION,
    DRIVER_ERRORS,
    attempt_of,
    envelope_headers,
    is_bundle,
    is_live,
    outgoing,
    text,
    translated,
    unbundled,
)
from sagakit.transports._consumers import Batches, cancelling
from sagakit.transports._rabbit_topology import QUORUM

if TYPE_CHECKING:
    from sagakit.transports.rabbitmq import RabbitTransport

log = get_logger("sagakit.transport")

_Incoming = aio_pika.abc.AbstractIncomingMessage


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


class RabbitConsumer:
    """What one ``consume`` runs: a taker that cuts ``queue``'s deliveries into batches
    of up to ``prefetch`` messages, and after each batch's handler, every message
    settled: acked, sent to a delay tier, or dead-lettered."""

    def __init__(
        self, transport: RabbitTransport, queue: str, handler: BatchHandler, *, prefetch: int
    ) -> None:
        self._transport = transport
        self.queue = queue
        self.handler = handler
        self.prefetch = prefetch
        #: What the broker delivered and the taker has not taken yet.
        self.inbox: asyncio.Queue[_Incoming] = asyncio.Queue()

    async def subscribe(self, *, concurrency: int) -> RabbitSubscription:
        """Consume the (declared) queue on a channel of its own, and start the taker."""
        queue = self.queue
        async with translated(f"consuming {queue!r}"):
            channel = await self._transport.connection.channel(publisher_confirms=False)
            try:
                # Room for every batch the consumer may have in hand at once.
                await channel.set_qos(prefetch_count=self.prefetch * concurrency)
                declared = await channel.declare_queue(
                    self._transport.name(queue), durable=True, arguments=QUORUM
                )
                tag = await declared.consume(self.inbox.put)
            except BaseException:
                with contextlib.suppress(*DRIVER_ERRORS):
                    await channel.close()
                raise
        batches = Batches(concurrency, f"consumer of {queue}")
        taker = asyncio.create_task(self._take(batches), name=f"consume {queue}")
        return RabbitSubscription(channel, declared, tag, taker, batches)

    async def _take(self, batches: Batches) -> None:
        """Cut the deliveries into batches of up to ``prefetch`` messages, each handled
        as soon as one of the consumer's slots is free."""
        inbox = self.inbox
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
            while carried < self.prefetch and not inbox.empty():
                batch.append(inbox.get_nowait())
                carried += _carries(batch[-1])
            live = [m for m in batch if is_live(m)]
            if not live or batches.stopping:
                batches.give_back()  # a stop's unhandled deliveries go back with the channel
                continue
            batches.start(self._settled(live))

    async def _settled(self, live: list[_Incoming]) -> None:
        try:
            await self._handle(live)
        except Exception as exc:
            if cancelling():
                raise asyncio.CancelledError from exc
            log.exception(f"consumer of {self.queue} failed to settle a batch; returning it")
            for message in live:
                if not message.processed:
                    await self._finish(message, "not settled")

    def _decode(self, message: _Incoming) -> list[Delivery]:
        """The deliveries an AMQP message carries: itself, or each message of a bundle (a
        bundle that cannot be read is one delivery, rejected as malformed)."""
        raw = message.headers or {}
        key = message.routing_key or ""
        if DESTINATION in raw:
            destination = text(raw[DESTINATION])
        elif message.exchange == self._transport.name(EVENTS):
            destination = event_destination(key)
        else:
            destination = key.removeprefix(self._transport.prefix)
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

    async def _handle(self, batch: list[_Incoming]) -> None:
        carried = [(m, self._decode(m)) for m in batch]
        # A bundle may carry more than the prefetch: the handler gets at most that many.
        ready = [d for _, ds in carried for d in ds if d.rejection is None]
        failures: dict[int, str] = {}
        for start in range(0, len(ready), self.prefetch):
            chunk = ready[start : start + self.prefetch]
            try:
                await self.handler(chunk)
            except Exception as exc:
                if cancelling():  # the stop cut the handler short: not its failure
                    raise
                failure = f"{type(exc).__name__}: {exc}"
                log.warning(
                    f"consumer of {self.queue} failed on {len(chunk)} message(s): {failure}"
                )
                failures.update(dict.fromkeys(map(id, chunk), failure))
        # A delivery whose channel died meanwhile is the broker's again: it comes back,
        # so a retry copy or a dead letter of it now would be a duplicate.
        held = [(m, ds) for m, ds in carried if is_live(m)]
        await asyncio.gather(*(self._settle(m, ds, failures) for m, ds in held))

    async def _settle(
        self, message: _Incoming, deliveries: list[Delivery], failures: dict[int, str]
    ) -> None:
        """Send each delivery of ``message`` on that is not done (to its retry tier or the
        dead letters), then ack ``message``; if a next home refused one, give it back."""
        placed = await asyncio.gather(*(self._place(d, failures.get(id(d))) for d in deliveries))
        await self._finish(message, next((r for r in placed if r is not None), None))

    async def _place(self, delivery: Delivery, failure: str | None) -> str | None:
        """Where ``delivery`` goes after its handler: nowhere (done), a retry tier or the
        dead letters; why that place refused it, or None."""
        if failure is not None:
            return await self._retry(delivery, failure)
        if delivery.rejection is not None:
            reason, detail = delivery.rejection
            return await self._dead_letter(delivery, reason, detail)
        if delivery.retry_reason is not None:
            return await self._retry(delivery, delivery.retry_reason)
        return None

    async def _retry(self, delivery: Delivery, error: str) -> str | None:
        tiers = self._transport.retry_tiers
        if delivery.deferred_for is not None:
            # Deferred: the first tier that waits long enough (or the longest), and the
            # same attempt, so no outage brings it to the delivery limit.
            tier = next(
                (n for n, delay in enumerate(tiers, start=1) if delay >= delivery.deferred_for),
                len(tiers),
            )
            attempt = delivery.attempt
        elif delivery.attempt >= self._transport.max_deliveries:
            return await self._dead_letter(delivery, "delivery_limit", error)
        else:
            tier = min(delivery.attempt, len(tiers))
            attempt = delivery.attempt + 1
        extra = {ATTEMPT: attempt, DESTINATION: delivery.message.destination}
        try:
            return await self._transport.send_to_queue(
                self._transport.tier_queue(self.queue, tier), outgoing(delivery.message, extra)
            )
        except DRIVER_ERRORS as exc:
            return f"{type(exc).__name__}: {exc}"

    async def _dead_letter(self, delivery: Delivery, reason: str, detail: str) -> str | None:
        letter = DeadLetter.now(delivery.message, self.queue, reason, detail, delivery.attempt)
        try:
            await self._transport.dead_letters.add(letter)
        except TransportError as exc:
            return str(exc)
        log.warning(
            f"dead-lettered {letter.message.message_id} from {self.queue}: {reason} ({detail})",
            saga_id=letter.message.headers.get("saga_id"),
        )
        return None

    async def _finish(self, message: _Incoming, refused: str | None) -> None:
        """Ack a delivery that is dealt with; give one whose next home refused it back to
        the queue, where it comes again with its attempt raised."""
        try:
            if refused is None:
                await message.ack()
            else:
                log.warning(f"returning {message.message_id} to {self.queue}: {refused}")
                await message.nack(requeue=True)
        except DRIVER_ERRORS as exc:
            # The channel is gone; the broker hands the delivery out again.
            log.warning(f"could not settle {message.message_id} on {self.queue}: {exc}")


def _carries(message: _Incoming) -> int:
    """How many saga messages an AMQP message carries (a bundle says so in a header)."""
    count = (message.headers or {}).get(BUNDLE, 1)
    return count if isinstance(count, int) and count > 0 else 1
