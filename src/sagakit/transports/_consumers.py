"""What every transport's consumer shares: batches handled side by side, and how a
consumer winds down when asked to stop.

A consumer is a *taker* (a loop that waits for deliveries and cuts them into batches)
and up to ``concurrency`` batches in their handlers at once, each its own transaction.
So a handler that hangs (until its step's timeout cancels it) holds one batch, not the
queue: the consumer's other commands keep moving meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

from sagakit.observe.logs import get_logger

log = get_logger("sagakit.transport")

#: Seconds cancelled batches get to unwind (roll back their transactions) before a stop
#: leaves them behind.
CANCEL_WAIT = 0.5


def cancelling() -> bool:
    """Whether the running task has been asked to stop. A driver interrupted mid-statement
    may turn the cancellation into an error of its own; a loop that catches errors asks
    this before it carries on, so the cancellation is not lost."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class Batches:
    """The batches one consumer has in its handler, at most ``concurrency`` at once."""

    def __init__(self, concurrency: int, what: str) -> None:
        if concurrency < 1:
            raise ValueError(f"a consumer's concurrency is at least 1, not {concurrency}")
        self.what = what
        self.stopping = False
        self._slots = asyncio.Semaphore(concurrency)
        self._running: set[asyncio.Task[None]] = set()

    @property
    def busy(self) -> bool:
        return bool(self._running)

    async def slot(self) -> None:
        """Wait until another batch may start (the taker calls this before it takes)."""
        await self._slots.acquire()

    def give_back(self) -> None:
        """Return a slot taken for a batch that never started."""
        self._slots.release()

    def start(self, batch: Coroutine[Any, Any, None]) -> None:
        """Handle a batch in the slot just taken."""
        task = asyncio.create_task(batch)
        self._running.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            log.error(f"{self.what}: a batch failed outside its handler: {error!r}")

    async def wind_down(self, taker: asyncio.Task[None], *, grace: float) -> None:
        """Stop: the taker takes no more; the batches in their handlers get ``grace``
        seconds to finish; then they are cancelled (their transactions roll back and
        their messages go back unacknowledged) and get CANCEL_WAIT seconds to unwind.
        A batch that still will not end (a driver that does not let go) is left behind,
        logged, so a stop always returns."""
        self.stopping = True
        taker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait([taker], timeout=CANCEL_WAIT)
        running = set(self._running)
        if running and grace > 0:
            await asyncio.wait(running, timeout=grace)
        running = {task for task in running if not task.done()}
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running, timeout=CANCEL_WAIT)
        if any(not task.done() for task in running):
            log.warning(f"{self.what}: a handler did not end when cancelled; leaving it behind")
