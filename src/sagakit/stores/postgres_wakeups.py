"""How PostgreSQL store processes wake each other: the outbox channel, and the one LISTEN
connection on which a store hears it and the end announcements (``stores/ends.py``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import asyncpg

#: The channel committing transactions notify when they wrote outbox rows.
OUTBOX_CHANNEL = "sagakit_outbox"


class ChannelListener:
    """One asyncpg connection that LISTENs on every channel asked for, made again (with
    every channel) if it died. Without it the store's waiters still poll."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._connection: Any = None
        self._lock = asyncio.Lock()
        #: The channels to LISTEN on, and those the current connection listens on.
        self._channels: dict[str, Callable[..., None]] = {}
        self._heard: set[str] = set()

    async def listen(self, channel: str, callback: Callable[..., None]) -> bool:
        """LISTEN on ``channel``, ``callback`` told of each notification; True while the
        connection is up."""
        self._channels[channel] = callback
        if self.live():
            if channel not in self._heard:
                async with self._lock:
                    await self._add(channel, callback)
            return self.live()
        async with self._lock:
            if self.live():
                return True
            self._heard.clear()
            try:
                self._connection = await asyncpg.connect(self._dsn)
                for name, heard_on in list(self._channels.items()):
                    await self._add(name, heard_on)
            except (OSError, asyncpg.PostgresError):
                self._connection = None  # polling still runs; try LISTEN again next time
        return self.live()

    async def _add(self, channel: str, callback: Callable[..., None]) -> None:
        if channel not in self._heard and self._connection is not None:
            await self._connection.add_listener(channel, callback)
            self._heard.add(channel)

    def live(self) -> bool:
        return self._connection is not None and not self._connection.is_closed()

    async def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
            self._connection = None
