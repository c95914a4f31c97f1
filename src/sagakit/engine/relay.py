"""The outbox relay: publishes committed outbox rows and marks them sent once confirmed.

A row is marked sent only after the transport confirmed it, so a relay that dies
between publish and mark-sent publishes the row again on restart; consumers' inboxes
make that second copy harmless. Up to ``max_inflight`` batches publish at once.

Rows a publisher publishes on commit (:mod:`sagakit.engine.publisher`) carry the time until
which the relay leaves them to it (``relay_after``); after that the relay takes them:
those the publisher did not get confirmed (it failed, or its process died between the
commit and the publish).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from sagakit.engine.outbox_sender import OutboxSender, SendStats
from sagakit.errors import SagaError
from sagakit.observe.logs import get_logger
from sagakit.ports import OutboxRow, PublishResult, SagaStore, Transport

log = get_logger("sagakit.relay")


@dataclass(slots=True)
class RelayStats(SendStats):
    failures: int = 0


class OutboxRelay(OutboxSender):
    """Moves one store's outbox to a transport until cancelled."""

    def __init__(
        self,
        store: SagaStore,
        transport: Transport,
        *,
        batch_size: int = 256,
        max_inflight: int = 4,
        poll_interval: float = 0.5,
        retry_after: float = 1.0,
        caught_up: Callable[[float], None] | None = None,
    ) -> None:
        """``caught_up(at)`` is called when a claim found nothing: every row due for
        the relay at ``at`` (this loop's time) has been sent."""
        super().__init__(
            store,
            transport,
            batch_size=batch_size,
            max_inflight=max_inflight,
            log=log,
            refusals="relay: ",
        )
        self.poll_interval = poll_interval
        self.retry_after = retry_after
        self.caught_up = caught_up
        self.stats = RelayStats()
        self._inflight: set[int] = set()
        self._cooling: dict[int, float] = {}
        self._claim_lock = asyncio.Lock()

    async def run(self) -> None:
        """Publish until cancelled, keeping up to ``max_inflight`` batches in flight."""
        slots = asyncio.Semaphore(self.max_inflight)
        tasks: set[asyncio.Task[int]] = set()

        def finished(task: asyncio.Task[int]) -> None:
            tasks.discard(task)
            slots.release()

        try:
            while True:
                await slots.acquire()
                claimed: asyncio.Future[int] = asyncio.get_running_loop().create_future()
                task = asyncio.create_task(self._batch(claimed))
                tasks.add(task)
                task.add_done_callback(finished)
                if await claimed < self.batch_size:
                    # Nothing more to claim right now: a claim straight after this one
                    # would come back empty. Rows committed since this claim began have
                    # woken the store already, so the wait returns at once for them.
                    await self.store.wait_for_outbox(self.poll_interval)
        finally:
            for task in list(tasks):
                task.cancel()
            for task in list(tasks):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def settle(self, timeout: float) -> bool:
        """Wait until no batch is in flight (for a clean stop); False if time ran out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._inflight:
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    async def drain(self) -> int:
        """Publish batch after batch until one confirms nothing; return how many were sent."""
        total = 0
        while sent := await self._batch(None):
            total += sent
        return total

    async def _batch(self, claimed: asyncio.Future[int] | None) -> int:
        """Claim one batch, report its size through ``claimed``, publish it, mark what the
        transport confirmed as sent, and return how many that was."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._cooling = {i: t for i, t in self._cooling.items() if t > now}
        ids: list[int] = []
        try:
            async with contextlib.AsyncExitStack() as stack:
                async with self._claim_lock:
                    claim = await stack.enter_async_context(
                        self.store.claim_outbox(
                            limit=self.batch_size,
                            exclude=[*self._inflight, *self._cooling],
                            older_than=self.store.clock.now(),
                        )
                    )
                    ids = [row.id for row in claim.rows]
                    self._inflight.update(ids)
                if claimed is not None:
                    claimed.set_result(len(ids))
                if not ids:
                    if self.caught_up is not None and not self._inflight and not self._cooling:
                        self.caught_up(now)
                    return 0
                result = await self._send([row.message for row in claim.rows])
                sent = [r.id for r in claim.rows if r.message.message_id in result.confirmed]
                claim.mark_sent(sent)
                self._cool_refused(result, claim.rows)
                self.stats.count(len(sent))
            return len(sent)
        except (SagaError, OSError) as exc:
            self.stats.failures += 1
            log.warning(f"relay could not publish {len(ids)} message(s): {exc}; will retry")
            until = loop.time() + self.retry_after
            self._cooling.update(dict.fromkeys(ids, until))
            return 0
        finally:
            self._inflight.difference_update(ids)
            if claimed is not None and not claimed.done():
                claimed.set_result(0)

    def _cool_refused(self, result: PublishResult, rows: list[OutboxRow]) -> None:
        if not result.failed:
            return
        until = asyncio.get_running_loop().time() + self.retry_after
        for row in rows:
            if row.message.message_id in result.failed:
                self._cooling[row.id] = until
