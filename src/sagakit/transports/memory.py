"""The in-process transport: asyncio queues, for embedded mode and tests.

There is no broker to hold a message, so a publish is confirmed only once a consumer
has handled the message and acknowledged it (or dead-lettered it). Until then its
outbox row stays unsent, and a process that dies mid-flight republishes it on restart.

It behaves like the RabbitMQ transport in everything a user can see: competing
consumers, events fanned out by topic patterns, failed batches coming back after their
retry tier's delay, and dead letters with their reason.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from dataclasses import dataclass

from sagakit.model.messages import EVENTS, TransportMessage, split_destination, topic_matches
from sagakit.observe.logs import get_logger
from sagakit.ports import (
    DEFAULT_RETRY_TIERS,
    BatchHandler,
    DeadLetter,
    DeadLetterQueue,
    Delivery,
    PublishResult,
)
from sagakit.transports._consumers import Batches, cancelling

log = get_logger("sagakit.transport")


@dataclass(slots=True)
class _Item:
    message: TransportMessage
    confirmed: asyncio.Future[None]
    attempt: int = 1


@dataclass(slots=True)
class _Subscription:
    taker: asyncio.Task[None]
    batches: Batches

    async def stop(self, *, grace: float = 0.0) -> None:
        """Take no more messages; give the batches in hand ``grace`` seconds (see
        Batches.wind_down); what they did not finish goes back on the queue."""
        await self.batches.wind_down(self.taker, grace=grace)


def _confirm(item: _Item) -> None:
    """The message was handled: its publisher's wait ends (its outbox row is sent)."""
    if not item.confirmed.done():
        item.confirmed.set_result(None)


class MemoryDeadLetters:
    """Dead letters kept in memory; replay puts them back on their queue."""

    def __init__(self, transport: MemoryTransport) -> None:
        self._transport = transport
        self._letters: dict[str, DeadLetter] = {}

    async def add(self, letter: DeadLetter) -> None:
        self._letters[letter.id] = letter

    async def list(self, *, limit: int = 100) -> list[DeadLetter]:
        return list(self._letters.values())[:limit]

    async def get(self, dead_letter_id: str) -> DeadLetter:
        try:
            return self._letters[dead_letter_id]
        except KeyError:
            raise LookupError(f"no dead letter {dead_letter_id!r}") from None

    async def replay(self, ids: Sequence[str] | None = None) -> int:
        chosen = list(self._letters) if ids is None else [i for i in ids if i in self._letters]
        replayed = 0
        for letter_id in chosen:
            letter = self._letters[letter_id]
            message = TransportMessage(
                letter.queue, letter.message.message_id, letter.message.body, letter.message.headers
            )
            # A letter whose queue is gone stays here rather than vanish on the way back.
            if self._transport.enqueue(message):
                del self._letters[letter_id]
                replayed += 1
        return replayed

    async def purge(self) -> int:
        count = len(self._letters)
        self._letters.clear()
        return count

    async def depth(self) -> int:
        return len(self._letters)


class MemoryTransport:
    """Queues in memory; competing consumers; retry tiers; dead letters with reasons.

    ``dead_letters`` is where rejected messages go: in memory by default, or a durable
    queue such as :class:`sagakit.stores.dead_letters.SqlDeadLetters` so an operator can
    list and replay them from another process.
    """

    def __init__(
        self,
        *,
        retry_tiers: Sequence[float] = DEFAULT_RETRY_TIERS,
        max_deliveries: int = 6,
        dead_letters: DeadLetterQueue | None = None,
    ) -> None:
        if not retry_tiers:
            raise ValueError("retry_tiers needs at least one delay")
        self.retry_tiers = tuple(retry_tiers)
        self.max_deliveries = max_deliveries
        self._queues: dict[str, asyncio.Queue[_Item]] = {}
        self._bindings: list[tuple[str, str]] = []
        self._subscriptions: list[_Subscription] = []
        self._timers: set[asyncio.TimerHandle] = set()
        self._dead_letters: DeadLetterQueue = dead_letters or MemoryDeadLetters(self)

    @property
    def dead_letters(self) -> DeadLetterQueue:
        return self._dead_letters

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        for sub in self._subscriptions:
            await sub.stop()
        self._subscriptions.clear()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    async def declare(self, queue: str) -> None:
        self._queues.setdefault(queue, asyncio.Queue())

    async def bind(self, queue: str, pattern: str) -> None:
        await self.declare(queue)
        if (queue, pattern) not in self._bindings:
            self._bindings.append((queue, pattern))

    async def nobody_serves(self, queue: str) -> str | None:
        """Why nothing serves ``queue`` here (None when a consumer of any runtime on this
        transport declared it): what a runtime's start warns about."""
        if self.declared(queue):
            return None
        return "nothing in this process serves it (in-process transport)"

    def declared(self, queue: str) -> bool:
        """Whether a consumer of this process (of any runtime on this transport) declared
        ``queue``."""
        return queue in self._queues

    def depth(self, queue: str) -> int:
        q = self._queues.get(queue)
        return q.qsize() if q else 0

    def _route(self, destination: str) -> list[str]:
        exchange, key = split_destination(destination)
        if exchange == EVENTS:
            return sorted({q for q, pattern in self._bindings if topic_matches(pattern, key)})
        return [key] if key in self._queues else []

    def enqueue(self, message: TransportMessage) -> int:
        """Put a message on its queue(s) without waiting for it; return how many."""
        loop = asyncio.get_running_loop()
        queues = self._route(message.destination)
        for name in queues:
            self._queues[name].put_nowait(_Item(message, loop.create_future()))
        return len(queues)

    async def publish(self, messages: Sequence[TransportMessage]) -> PublishResult:
        loop = asyncio.get_running_loop()
        waiting: list[tuple[str, asyncio.Future[None]]] = []
        failed: dict[str, str] = {}
        for message in messages:
            queues = self._route(message.destination)
            if not queues:
                failed[message.message_id] = f"unroutable: nothing bound to {message.destination!r}"
                continue
            for name in queues:
                item = _Item(message, loop.create_future())
                self._queues[name].put_nowait(item)
                waiting.append((message.message_id, item.confirmed))
        if waiting:
            await asyncio.gather(*(future for _, future in waiting))
        return PublishResult(confirmed={mid for mid, _ in waiting}, failed=failed)

    async def consume(
        self, queue: str, handler: BatchHandler, *, prefetch: int = 64, concurrency: int = 1
    ) -> _Subscription:
        await self.declare(queue)
        q = self._queues[queue]
        batches = Batches(concurrency, f"consumer of {queue}")
        taker = asyncio.create_task(self._take(queue, q, handler, prefetch, batches))
        sub = _Subscription(taker, batches)
        self._subscriptions.append(sub)
        return sub

    async def _take(
        self,
        name: str,
        q: asyncio.Queue[_Item],
        handler: BatchHandler,
        prefetch: int,
        batches: Batches,
    ) -> None:
        """Cut what the queue holds into batches of up to ``prefetch``, each handled as
        soon as one of the consumer's slots is free."""
        while not batches.stopping:
            await batches.slot()
            try:
                batch = [await q.get()]
            except BaseException:
                batches.give_back()
                raise
            while len(batch) < prefetch and not q.empty():
                batch.append(q.get_nowait())
            batches.start(self._handle(name, q, handler, batch))

    async def _handle(
        self, name: str, q: asyncio.Queue[_Item], handler: BatchHandler, batch: list[_Item]
    ) -> None:
        deliveries = [Delivery(item.message, item.attempt) for item in batch]
        for item, delivery in zip(batch, deliveries, strict=True):
            delivery.on_done = functools.partial(_confirm, item)
        try:
            await handler(deliveries)
        except asyncio.CancelledError:
            for item in batch:
                q.put_nowait(item)  # not acknowledged: someone else gets it
            raise
        except Exception as exc:
            if cancelling():  # the stop cut the handler short: not its failure
                for item in batch:
                    q.put_nowait(item)
                raise asyncio.CancelledError from exc
            error = f"{type(exc).__name__}: {exc}"
            log.warning(f"consumer of {name} failed on {len(batch)} message(s): {error}")
            for item in batch:
                if not item.confirmed.done():  # not one the handler finished early
                    await self._retry(name, q, item, error)
            return
        for item, delivery in zip(batch, deliveries, strict=True):
            if delivery.rejection is not None:
                reason, detail = delivery.rejection
                await self._dead_letter(name, item, reason, detail)
            elif delivery.retry_reason is not None:
                await self._retry(name, q, item, delivery.retry_reason, after=delivery.deferred_for)
            else:
                _confirm(item)

    async def _retry(
        self,
        name: str,
        q: asyncio.Queue[_Item],
        item: _Item,
        error: str,
        *,
        after: float | None = None,
    ) -> None:
        if after is not None:
            delay = after  # deferred: the same attempt, however many times
        elif item.attempt >= self.max_deliveries:
            await self._dead_letter(name, item, "delivery_limit", error)
            return
        else:
            delay = self.retry_tiers[min(item.attempt, len(self.retry_tiers)) - 1]
            item.attempt += 1
        handle: asyncio.TimerHandle

        def requeue() -> None:
            self._timers.discard(handle)
            q.put_nowait(item)

        handle = asyncio.get_running_loop().call_later(delay, requeue)
        self._timers.add(handle)

    async def _dead_letter(self, name: str, item: _Item, reason: str, detail: str) -> None:
        letter = DeadLetter.now(item.message, name, reason, detail, item.attempt)
        try:
            await self._dead_letters.add(letter)
        except Exception:
            # Nowhere safe to put it: leave it unconfirmed so its outbox row is kept.
            log.exception(f"could not store dead letter from {name}")
            return
        log.warning(
            f"dead-lettered {item.message.message_id} from {name}: {reason} ({detail})",
            saga_id=item.message.headers.get("saga_id"),
        )
        if not item.confirmed.done():
            item.confirmed.set_result(None)
