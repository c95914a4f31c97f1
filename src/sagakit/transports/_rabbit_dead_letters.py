"""The RabbitMQ dead-letter queue: a quorum queue that can be browsed without loss."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

import aio_pika.abc

from sagakit.errors import TransportError
from sagakit.observe.logs import get_logger
from sagakit.ports import DeadLetter
from sagakit.transports._amqp import (
    DRIVER_ERRORS,
    letter_headers,
    letter_of,
    outgoing,
    raise_translated,
    translated,
)

if TYPE_CHECKING:
    from sagakit.transports.rabbitmq import RabbitTransport

log = get_logger("sagakit.transport")

#: The quorum queue every transport with the same prefix sets dead letters aside in.
DEAD_LETTER_QUEUE = "sagakit.dead-letters"

#: Dead letters taken from their queue and held unacknowledged while they are looked at.
_Held = list[tuple[aio_pika.abc.AbstractIncomingMessage, DeadLetter]]


class RabbitDeadLetters:
    """The dead-letter quorum queue, browsed without losing anything.

    Browsing takes letters with ``basic.get`` on a private channel and holds them
    unacknowledged, then gives back every letter it did not replay; closing that channel
    gives back whatever an error left held. Only one browse runs at a time per process.
    """

    def __init__(self, transport: RabbitTransport) -> None:
        self._transport = transport
        self._lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return self._transport.name(DEAD_LETTER_QUEUE)

    async def add(self, letter: DeadLetter) -> None:
        message = outgoing(letter.message, letter_headers(letter))
        async with translated(f"dead-lettering {letter.message.message_id}"):
            refused = await self._transport.send_to_queue(self.name, message)
        if refused is not None:
            raise TransportError(f"the dead-letter queue refused {letter.id}: {refused}")

    async def list(self, *, limit: int = 100) -> list[DeadLetter]:
        if limit <= 0:
            return []
        async with self._held(limit) as held:
            return [letter for _, letter in held]

    async def get(self, dead_letter_id: str) -> DeadLetter:
        async with self._held(None) as held:
            for _, letter in held:
                if letter.id == dead_letter_id:
                    return letter
        raise LookupError(f"no dead letter {dead_letter_id!r}")

    async def replay(self, ids: Sequence[str] | None = None) -> int:
        wanted = None if ids is None else set(ids)
        async with self._held(None) as held:
            chosen = [(m, lt) for m, lt in held if wanted is None or lt.id in wanted]
            outcomes = await asyncio.gather(
                *(self._replay_one(m, lt) for m, lt in chosen), return_exceptions=True
            )
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    # Letters already replayed are gone from the queue: asking again is safe.
                    raise_translated("replaying dead letters", outcome)
        return sum(1 for outcome in outcomes if outcome is True)

    async def _replay_one(
        self, message: aio_pika.abc.AbstractIncomingMessage, letter: DeadLetter
    ) -> bool:
        # Only the original headers go back: the replayed copy is a fresh attempt 1.
        again = outgoing(letter.message)
        refused = await self._transport.send_to_queue(self._transport.name(letter.queue), again)
        if refused is not None:
            log.warning(f"could not replay dead letter {letter.id} to {letter.queue}: {refused}")
            return False
        await message.ack()
        return True

    async def purge(self) -> int:
        async with self._lock, translated("purging the dead-letter queue"):
            channel = await self._transport.topology.get_underlay_channel()
            result = await channel.queue_purge(self.name)
        return int(result.message_count or 0)

    async def depth(self) -> int:
        async with self._lock, translated("measuring the dead-letter queue"):
            return await self._ready()

    async def _ready(self) -> int:
        channel = await self._transport.topology.get_underlay_channel()
        # Passive declare through the underlying channel: the robust channel would
        # answer a passive declare of a known queue from its cache.
        declared = await channel.queue_declare(self.name, passive=True)
        return int(declared.message_count or 0)

    async def _shown_again(self, ready: int, timeout: float = 2.0) -> None:
        """Wait until the queue counts ``ready`` letters as ready again.

        A quorum queue applies returns asynchronously, so without this a ``depth()`` or
        ``list()`` right after browsing could miss letters that are safely there.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if await self._ready() >= ready:
                return
            await asyncio.sleep(0.005)

    @contextlib.asynccontextmanager
    async def _held(self, limit: int | None) -> AsyncIterator[_Held]:
        async with self._lock, translated("browsing the dead-letter queue"):
            channel = await self._transport.connection.channel(publisher_confirms=False)
            try:
                queue = await channel.declare_queue(self.name, passive=True, robust=False)
                held: _Held = []
                while limit is None or len(held) < limit:
                    got = await queue.get(no_ack=False, fail=False)
                    if got is None:
                        break
                    held.append((got, letter_of(got)))
                left = await self._ready() if held else 0
                yield held
                returned = [m for m, _ in held if not m.processed]
                for message in returned:  # in order, so the queue keeps its order
                    await message.nack(requeue=True)
                if returned:
                    await self._shown_again(left + len(returned))
            finally:
                with contextlib.suppress(*DRIVER_ERRORS):
                    await channel.close()
