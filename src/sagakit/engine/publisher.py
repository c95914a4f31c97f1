"""Publish on commit: what a unit of work committed to the outbox goes to the transport
straight after the commit, from the process that committed it.

The outbox row is written in the unit's transaction as before, and is marked sent only
once the transport confirmed the message. The row says until when the relay leaves it
to the publisher (``grace`` after the commit); a process that dies between the commit
and the confirm (or a publish that fails) leaves the row unsent, and the relay
publishes it after that; the consumer's inbox absorbs the copy when both got through.
Rows written where no publisher runs (a CLI, a service without a transport) go to the
relay at once, as before. Nothing here waits on a timer: a commit's messages are
published at once, and batches form only while earlier publishes are in flight.

Within this process the messages of one saga for one destination are published in
commit order, one batch at a time; once one of them was not confirmed, the later ones
of that pair are left to the relay too, which publishes a saga's rows in order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from sagakit.engine.outbox_sender import OutboxSender, SendStats
from sagakit.errors import SagaError
from sagakit.model.messages import TransportMessage
from sagakit.observe.logs import get_logger
from sagakit.ports import SagaStore, Transport

log = get_logger("sagakit.publisher")

Pair = tuple[str, str]


@dataclass(slots=True)
class PublisherStats(SendStats):
    #: Messages left to the relay: a publish failed or was refused.
    left: int = 0


def _pair(message: TransportMessage) -> Pair:
    return message.headers.get("saga_id", ""), message.destination


class OutboxPublisher(OutboxSender):
    """Publishes a store's committed outbox messages to a transport as they commit.

    :meth:`attach` hooks it to the store's commits (the runtime does this for every
    store of the components it runs); :meth:`close` lets the publishes in flight end.
    """

    def __init__(
        self,
        store: SagaStore,
        transport: Transport,
        *,
        batch_size: int = 256,
        max_inflight: int = 4,
        grace: float = 1.0,
    ) -> None:
        super().__init__(
            store, transport, batch_size=batch_size, max_inflight=max_inflight, log=log
        )
        self.grace = grace
        self.stats = PublisherStats()
        self._pending: deque[TransportMessage] = deque()
        self._busy: set[Pair] = set()
        #: Pairs with a message left to the relay, and when (this loop's time).
        self._left: dict[Pair, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._confirmed: list[str] = []
        self._marking: asyncio.Task[None] | None = None
        #: Confirmed rows are marked sent this long after the first of them, together:
        #: off the saga's path, and well within the grace the relay leaves them.
        self.mark_delay = grace / 10
        self._mark_now = asyncio.Event()
        self._closing = False
        #: When each message not yet confirmed was committed (this loop's time).
        self._committed_at: dict[str, float] = {}

    def attach(self) -> None:
        self.store.publish_on_commit(self.committed, grace=self.grace)

    def detach(self) -> None:
        self.store.publish_on_commit(None)

    def committed(self, messages: Sequence[TransportMessage]) -> None:
        """A unit committed these messages to the outbox: publish them."""
        now = asyncio.get_running_loop().time()
        self._committed_at.update((m.message_id, now) for m in messages)
        self._pending.extend(messages)
        self._pump()

    def _pump(self) -> None:
        while self._pending and len(self._tasks) < self.max_inflight:
            batch = self._take()
            if not batch:
                return
            task = asyncio.get_running_loop().create_task(self._publish(batch))
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _take(self) -> list[TransportMessage]:
        """Up to ``batch_size`` pending messages whose pair has nothing in flight; a
        pair's later messages stay pending behind its first, in order.

        Not one publish per destination: over the in-process transport a publish is
        confirmed once its consumer has handled it, so every other saga's message for
        that destination would wait behind a slow handler (up to its timeout), and
        their steps' deadlines with them."""
        batch: list[TransportMessage] = []
        kept: deque[TransportMessage] = deque()
        taken: set[Pair] = set()
        while self._pending:
            message = self._pending.popleft()
            pair = _pair(message)
            if pair in self._left:
                # The relay has an earlier one of this pair: this one goes after it.
                self._left[pair] = asyncio.get_running_loop().time()
                self._committed_at.pop(message.message_id, None)
                self.stats.left += 1
                continue
            if len(batch) >= self.batch_size or pair in self._busy:
                kept.append(message)
                continue
            batch.append(message)
            taken.add(pair)
        self._pending = kept
        self._busy |= taken
        return batch

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning(f"publisher failed: {task.exception()!r}")
        self._pump()

    async def _publish(self, batch: list[TransportMessage]) -> None:
        confirmed: set[str] = set()
        try:
            confirmed = (await self._send(batch)).confirmed
        except (SagaError, OSError) as exc:
            log.warning(f"could not publish {len(batch)} message(s): {exc}; the relay will")
        finally:
            now = asyncio.get_running_loop().time()
            oldest = now
            for message in batch:
                pair = _pair(message)
                self._busy.discard(pair)
                oldest = min(oldest, self._committed_at.pop(message.message_id, now))
                if message.message_id not in confirmed:
                    self._left[pair] = now
                    self.stats.left += 1
        self.stats.count(len(confirmed))
        if confirmed:
            self._confirmed.extend(confirmed)
            if now - oldest > self.grace / 2:
                # A slow confirm: the relay's grace for these rows is running out, so
                # they are marked now, not with the next ones.
                self._mark_now.set()
            if self._marking is None:
                self._marking = asyncio.get_running_loop().create_task(self._mark())

    async def _mark(self) -> None:
        """Mark what was confirmed sent, all that waits in one statement. A failure
        leaves the rows to the relay, which publishes them again.

        Marking waits ``mark_delay`` first, so that one statement marks the rows of many
        hops: marked one hop at a time, the marks cost a transaction per message, on the
        same event loop and database as the sagas' next hops."""
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._mark_now.wait(), self.mark_delay)
            if not self._closing:
                self._mark_now.clear()
            while self._confirmed:
                ids, self._confirmed = self._confirmed, []
                try:
                    await self.store.mark_sent_messages(ids)
                except (SagaError, OSError) as exc:
                    log.warning(f"could not mark {len(ids)} message(s) sent: {exc}")
        finally:
            self._marking = None

    def caught_up(self, at: float) -> None:
        """A relay found nothing unsent that was due for it at ``at`` (this loop's
        time): every row left to it ``grace`` before that has gone, so the pairs last
        left then may be published here again."""
        before = at - self.grace
        self._left = {pair: left for pair, left in self._left.items() if left >= before}

    async def close(self, timeout: float) -> None:
        """Let the publishes in flight and the marking end, within ``timeout``."""
        self.detach()
        self._closing = True
        self._mark_now.set()
        tasks = [*self._tasks, *([self._marking] if self._marking else [])]
        if tasks:
            _, stuck = await asyncio.wait(tasks, timeout=timeout)
            for task in stuck:
                task.cancel()
            for task in stuck:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._marking is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._marking
