"""The loops a runtime keeps running: each restarted after a pause when it fails (a
database restart, a dropped connection), and all cancelled at a stop that never waits
long on one that will not let go."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from sagakit.observe.logs import get_logger

log = get_logger("sagakit.runtime")

#: Seconds a stop gives cancelled loops, and the transport's close, at the least.
CLOSE_WAIT = 0.5


class Supervisor:
    """Runs named loops as tasks, restarting one ``restart_delay`` seconds after it fails."""

    def __init__(self, *, restart_delay: float) -> None:
        self.restart_delay = restart_delay
        self._tasks: list[asyncio.Task[None]] = []

    def spawn(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        self._tasks.append(asyncio.create_task(self._supervise(name, loop), name=name))

    async def cancel(self) -> None:
        """Cancel every loop (see :func:`cancel`)."""
        await cancel(self._tasks)
        self._tasks.clear()

    async def _supervise(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await loop()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception(f"{name} failed ({type(exc).__name__}); restarting")
                await asyncio.sleep(self.restart_delay)


async def cancel(tasks: Sequence[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait, briefly, for them to unwind; one that will not (a driver
    that does not let go) is left behind, logged, so a stop always returns."""
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    _, stuck = await asyncio.wait(tasks, timeout=CLOSE_WAIT)
    for task in stuck:
        log.warning(f"{task.get_name()} did not end when cancelled; leaving it behind")
