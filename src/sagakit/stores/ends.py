"""Waiting for sagas to end without asking the database again and again.

A client that started sagas wants their outcomes. Polling the projection for every
saga it waits on costs a query per poll however few sagas ended, and a short poll
interval is most of a busy client's work. So a store that can announce ends does:
PostgreSQL's units send the ids and statuses of the sagas a transaction ended as a
NOTIFY on :data:`ENDED_CHANNEL`, riding on a statement the transaction sends anyway,
delivered at commit and never for a rollback. :class:`EndWatch` resolves each waiter
from those announcements, and keeps the last ones it heard so a waiter that comes a
little late is answered at once.

Announcements can be missed (the listening connection died with a restarted server,
or the saga ended before anyone listened), so the watch also polls the sagas still
waited on: rarely while announcements flow, often where there are none (SQLite).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence

from sagakit.model.status import SagaStatus

#: The NOTIFY channel a PostgreSQL store announces ended sagas on.
ENDED_CHANNEL = "sagakit_ended"

#: PostgreSQL refuses a NOTIFY payload of 8,000 bytes or more.
_PAYLOAD_BYTES = 7900

_ENDS = frozenset(status.value for status in SagaStatus if status.terminal)

#: Statuses of (saga id, status) pairs, asked of the projection.
Statuses = Callable[[Sequence[str]], Awaitable[dict[str, str]]]
#: Starts listening if it can; True while announcements arrive.
Listen = Callable[[], Awaitable[bool]]


def announcements(ended: Sequence[tuple[str, str]]) -> list[str]:
    """``ended`` as NOTIFY payloads: JSON lists of ``[saga_id, status]``, each small
    enough for one notification."""
    payloads: list[str] = []
    chunk: list[str] = []
    size = 2
    for saga_id, status in ended:
        item = json.dumps([saga_id, status], separators=(",", ":"))
        if chunk and size + len(item.encode()) + 1 > _PAYLOAD_BYTES:
            payloads.append(f"[{','.join(chunk)}]")
            chunk, size = [], 2
        chunk.append(item)
        size += len(item.encode()) + 1
    if chunk:
        payloads.append(f"[{','.join(chunk)}]")
    return payloads


def heard(payload: str) -> list[tuple[str, str]]:
    """The (saga id, status) pairs of one announcement; nothing for one it cannot read."""
    try:
        return [(str(saga_id), str(status)) for saga_id, status in json.loads(payload)]
    except (ValueError, TypeError):
        return []


class EndWatch:
    """Who waits for which sagas to end; fed by announcements and by a poll.

    ``listen`` starts the store's announcements (True while they arrive); while they do,
    the sagas waited on are polled every ``backstop`` seconds, otherwise every ``poll``.
    """

    def __init__(
        self,
        statuses: Statuses,
        listen: Listen | None = None,
        *,
        poll: float = 0.02,
        backstop: float = 1.0,
        remember: int = 10_000,
    ) -> None:
        self._statuses = statuses
        self._listen = listen
        self.poll = poll
        self.backstop = backstop
        self._remember = remember
        self._recent: OrderedDict[str, str] = OrderedDict()
        self._waiting: dict[str, list[asyncio.Future[str]]] = {}
        self._poller: asyncio.Task[None] | None = None

    def saw(self, ended: Iterable[tuple[str, str]]) -> None:
        """Sagas that ended (announced, or found by a poll)."""
        for saga_id, status in ended:
            if status not in _ENDS:
                continue  # not an end (or a status this version does not know)
            self._recent[saga_id] = status
            self._recent.move_to_end(saga_id)
            for future in self._waiting.pop(saga_id, ()):
                if not future.done():
                    future.set_result(status)
        while len(self._recent) > self._remember:
            self._recent.popitem(last=False)

    async def wait(self, saga_ids: Iterable[str], *, timeout: float) -> dict[str, str]:
        """The terminal status of each saga, once all have one; TimeoutError naming the
        sagas still unfinished after ``timeout`` seconds."""
        ids = list(dict.fromkeys(saga_ids))
        loop = asyncio.get_running_loop()
        ended = {i: self._recent[i] for i in ids if i in self._recent}
        mine: dict[str, asyncio.Future[str]] = {}
        for saga_id in ids:
            if saga_id not in ended:
                mine[saga_id] = loop.create_future()
                self._waiting.setdefault(saga_id, []).append(mine[saga_id])
        if not mine:
            return ended
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll(), name="sagakit end watch")
        try:
            async with asyncio.timeout(timeout):
                statuses = await asyncio.gather(*mine.values())
        except TimeoutError:
            now = await self._statuses(list(mine))
            sample = ", ".join(f"{i} ({now.get(i, 'missing')})" for i in list(mine)[:5])
            raise TimeoutError(
                f"{len(mine)} saga(s) not terminal after {timeout}s: {sample}"
            ) from None
        finally:
            for saga_id, future in mine.items():
                waiters = self._waiting.get(saga_id, [])
                with contextlib.suppress(ValueError):
                    waiters.remove(future)
                if not waiters:
                    self._waiting.pop(saga_id, None)
        return {**ended, **dict(zip(mine, statuses, strict=True))}

    async def _poll(self) -> None:
        # The first look is at once: a saga may have ended before anyone listened.
        delay = 0.0
        while self._waiting:
            await asyncio.sleep(delay)
            live = await self._listen() if self._listen is not None else False
            delay = self.backstop if live else self.poll
            ids = list(self._waiting)
            with contextlib.suppress(Exception):  # a failed look is tried again next time
                self.saw((await self._statuses(ids)).items())

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            # A look cut short by the close is nobody's concern any more.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._poller
            self._poller = None
