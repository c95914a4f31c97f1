"""A transport that misbehaves on purpose, under a seed: drop, duplicate, delay, reorder."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

from sagakit.model.messages import TransportMessage
from sagakit.ports import BatchHandler, DeadLetterQueue, PublishResult, Subscription, Transport


@dataclass(frozen=True, slots=True, kw_only=True)
class Faults:
    """Probabilities, per published message, of each fault; ``seed`` makes runs repeatable."""

    drop: float = 0.0
    duplicate: float = 0.0
    delay: float = 0.0
    reorder: float = 0.0
    max_delay: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("drop", "duplicate", "delay", "reorder"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"fault probability {name}={value} must be within [0, 1]")


@dataclass(slots=True)
class FaultCounts:
    published: int = 0
    dropped: int = 0
    duplicated: int = 0
    delayed: int = 0
    reordered: int = 0
    log: list[str] = field(default_factory=list)


class FaultyTransport:
    """Wraps a real transport and injects faults into what is published through it.

    A dropped, delayed or held-back message is reported as confirmed, as a broker would
    confirm a message that is later lost or late; the sagas must recover on their own
    (deadlines, retries) and every effect must still happen once.
    """

    def __init__(self, inner: Transport, faults: Faults) -> None:
        self.inner = inner
        self.faults = faults
        self.counts = FaultCounts()
        self._rng = random.Random(faults.seed)  # noqa: S311 - seeded for repeatable faults
        self._background: set[asyncio.Task[None]] = set()
        self.enabled = True

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.inner.close()

    async def declare(self, queue: str) -> None:
        await self.inner.declare(queue)

    async def bind(self, queue: str, pattern: str) -> None:
        await self.inner.bind(queue, pattern)

    @property
    def dead_letters(self) -> DeadLetterQueue:
        return self.inner.dead_letters

    async def nobody_serves(self, queue: str) -> str | None:
        """The wrapped transport's answer, if it has one."""
        check = getattr(self.inner, "nobody_serves", None)
        return None if check is None else cast("str | None", await check(queue))

    async def consume(
        self, queue: str, handler: BatchHandler, *, prefetch: int = 64, concurrency: int = 1
    ) -> Subscription:
        return await self.inner.consume(queue, handler, prefetch=prefetch, concurrency=concurrency)

    async def publish(self, messages: Sequence[TransportMessage]) -> PublishResult:
        if not self.enabled:
            return await self.inner.publish(messages)
        f, rng, counts = self.faults, self._rng, self.counts
        now: list[TransportMessage] = []
        faked: set[str] = set()
        for message in messages:
            counts.published += 1
            roll = rng.random()
            if roll < f.drop:
                counts.dropped += 1
                counts.log.append(f"drop {message.message_id}")
                faked.add(message.message_id)
                continue
            if rng.random() < f.delay:
                counts.delayed += 1
                counts.log.append(f"delay {message.message_id}")
                faked.add(message.message_id)
                self._later([message], rng.uniform(0, f.max_delay))
                continue
            if rng.random() < f.reorder:
                # Held back until after what is published next, so it arrives out of order.
                counts.reordered += 1
                counts.log.append(f"hold {message.message_id}")
                faked.add(message.message_id)
                self._later([message], f.max_delay)
                continue
            now.append(message)
            if rng.random() < f.duplicate:
                counts.duplicated += 1
                counts.log.append(f"duplicate {message.message_id}")
                self._later([message], rng.uniform(0, f.max_delay))
        rng.shuffle(now)
        result = await self.inner.publish(now) if now else PublishResult(confirmed=set())
        return PublishResult(confirmed=result.confirmed | faked, failed=result.failed)

    def _later(self, messages: list[TransportMessage], after: float) -> None:
        async def deliver() -> None:
            await asyncio.sleep(after)
            await self.inner.publish(messages)

        task = asyncio.create_task(deliver())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def flush(self) -> None:
        """Wait until delayed and held-back messages have been handed over."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
