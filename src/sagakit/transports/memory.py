"""The in-process transport: asyncio queues, for embedded mode and tests.

There is no broker to hold a message, so a publish is confirmed only once a consumer
has handled the message and acknowledged it (or dead-lettered it). Until then its
outbox row stays unsent, and a process that dies mid-flight republishes it on restart.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from sagakit.logs import get_logger
from sagakit.messages import TransportMessage
from sagakit.ports import BatchHandler, Delivery, PublishResult

log = get_logger("sagakit.transport")


@dataclass(slots=True)
class DeadLetter:
    message: TransportMessage
    queue: str
    reason: str
    detail: str
    attempts: int


@dataclass(slots=True)
class _Item:
    message: TransportMessage
    confirmed: asyncio.Future[None]
    attempt: int = 1


@dataclass(slots=True)
class _Subscription:
    task: asyncio.Task[None]
    current: list[_Item] = field(default_factory=list)

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


class MemoryTransport:
    """Queues in memory; competing consumers; redelivery with a delivery limit."""

    def __init__(self, *, max_deliveries: int = 10, redelivery_delay: float = 0.05) -> None:
        self.max_deliveries = max_deliveries
        self.redelivery_delay = redelivery_delay
        self._queues: dict[str, asyncio.Queue[_Item]] = {}
        self._subscriptions: list[_Subscription] = []
        self.dead_letters: list[DeadLetter] = []

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        for sub in self._subscriptions:
            await sub.stop()
        self._subscriptions.clear()

    async def declare(self, queue: str) -> None:
        self._queues.setdefault(queue, asyncio.Queue())

    def depth(self, queue: str) -> int:
        q = self._queues.get(queue)
        return q.qsize() if q else 0

    async def publish(self, messages: Sequence[TransportMessage]) -> PublishResult:
        loop = asyncio.get_running_loop()
        waiting: list[tuple[str, asyncio.Future[None]]] = []
        failed: dict[str, str] = {}
        for message in messages:
            queue = self._queues.get(message.destination)
            if queue is None:
                failed[message.message_id] = f"unroutable: no queue {message.destination!r}"
                continue
            item = _Item(message, loop.create_future())
            queue.put_nowait(item)
            waiting.append((message.message_id, item.confirmed))
        if waiting:
            await asyncio.gather(*(future for _, future in waiting))
        return PublishResult(confirmed={mid for mid, _ in waiting}, failed=failed)

    async def consume(
        self, queue: str, handler: BatchHandler, *, prefetch: int = 64
    ) -> _Subscription:
        await self.declare(queue)
        q = self._queues[queue]
        holder: list[_Subscription] = []
        task = asyncio.create_task(self._run(queue, q, handler, prefetch, holder))
        sub = _Subscription(task)
        holder.append(sub)
        self._subscriptions.append(sub)
        return sub

    async def _run(
        self,
        name: str,
        q: asyncio.Queue[_Item],
        handler: BatchHandler,
        prefetch: int,
        holder: list[_Subscription],
    ) -> None:
        while True:
            batch = [await q.get()]
            while len(batch) < prefetch and not q.empty():
                batch.append(q.get_nowait())
            sub = holder[0]
            sub.current = batch
            deliveries = [Delivery(item.message, item.attempt) for item in batch]
            try:
                await handler(deliveries)
            except asyncio.CancelledError:
                for item in batch:
                    q.put_nowait(item)  # not acknowledged: someone else gets it
                raise
            except Exception as exc:
                log.warning(
                    f"consumer of {name} failed on a batch of {len(batch)}: {exc!r}; redelivering"
                )
                for item in batch:
                    self._retry(name, q, item, f"{type(exc).__name__}: {exc}")
            else:
                for item, delivery in zip(batch, deliveries, strict=True):
                    if delivery.rejection is not None:
                        reason, detail = delivery.rejection
                        self._dead_letter(name, item, reason, detail)
                    elif not item.confirmed.done():
                        item.confirmed.set_result(None)
            sub.current = []

    def _retry(self, name: str, q: asyncio.Queue[_Item], item: _Item, error: str) -> None:
        item.attempt += 1
        if item.attempt > self.max_deliveries:
            self._dead_letter(name, item, "delivery_limit", error)
            return
        asyncio.get_running_loop().call_later(self.redelivery_delay, q.put_nowait, item)

    def _dead_letter(self, name: str, item: _Item, reason: str, detail: str) -> None:
        self.dead_letters.append(DeadLetter(item.message, name, reason, detail, item.attempt))
        log.warning(
            f"dead-lettered {item.message.message_id} from {name}: {reason} ({detail})",
            saga_id=item.message.headers.get("saga_id"),
        )
        if not item.confirmed.done():
            item.confirmed.set_result(None)
