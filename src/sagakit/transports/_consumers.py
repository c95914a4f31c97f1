"""What every transport's consumer loop shares: how it winds down when asked to stop."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from sagakit.logs import get_logger

log = get_logger("sagakit.transport")

#: Seconds a cancelled consumer gets to unwind (roll back its transaction) before it is
#: left behind.
CANCEL_WAIT = 0.5


@dataclass(slots=True)
class ConsumerState:
    """Shared by a consumer loop and its subscription: stop taking batches, and whether
    a batch is in the handler now."""

    stopping: bool = False
    busy: bool = False


def cancelling() -> bool:
    """Whether the running task has been asked to stop. A driver interrupted mid-statement
    may turn the cancellation into an error of its own; a loop that catches errors asks
    this before it carries on, so the cancellation is not lost."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def wind_down(
    task: asyncio.Task[None], state: ConsumerState, *, grace: float, what: str
) -> None:
    """Stop a consumer loop: it takes no more batches; the one in its handler gets
    ``grace`` seconds to finish; then the loop is cancelled (its transaction rolls back
    and its messages go back unacknowledged) and gets CANCEL_WAIT seconds to unwind. A
    loop that still will not end (a driver that does not let go) is left behind, logged,
    so a stop always returns."""
    state.stopping = True
    if state.busy and grace > 0:
        await asyncio.wait([task], timeout=grace)
    if not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=CANCEL_WAIT)
    if not task.done():
        log.warning(f"{what}: its handler did not end when cancelled; leaving it behind")
        return
    with contextlib.suppress(asyncio.CancelledError):
        error = task.exception()
        if error is not None:
            log.warning(f"{what} ended with {type(error).__name__}: {error}")
