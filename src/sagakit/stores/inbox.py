"""The inbox side of one SQL store transaction: claiming message keys, and replies.

A consumer claims each message's key in ``saga_inbox`` in the same transaction as the
work the message asks for, so a redelivered message finds its key taken and is not run
twice; a participant stores the reply it sent beside the key, to send it again for a
duplicate. :class:`SqlInbox` is that facet of :class:`sagakit.stores.unit.SqlUnit`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from sagakit.stores.schema import saga_inbox

if TYPE_CHECKING:
    from sagakit.stores.sql import SqlSagaStore

#: How a dialect says ``INSERT`` with ``ON CONFLICT`` (SQLite's or PostgreSQL's insert).
InsertFactory = Callable[[Any], Any]


class SqlInbox:
    """Inbox claims and replies on the unit's connection, inside its transaction."""

    _store: SqlSagaStore
    _conn: AsyncConnection

    async def claim(self, consumer: str, keys: Sequence[str]) -> set[str]:
        unique = list(dict.fromkeys(keys))
        if not unique:
            return set()
        now = self._store.clock.now()
        rows = [{"consumer": consumer, "key": k, "reply": None, "received_at": now} for k in unique]
        result = await self._conn.execute(self._store.statements.claim, rows)
        return {row[0] for row in result}

    async def claim_each(self, pairs: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        by_consumer: dict[str, list[str]] = {}
        for consumer, key in pairs:
            by_consumer.setdefault(consumer, []).append(key)
        return {
            (consumer, key)
            for consumer, keys in by_consumer.items()
            for key in await self.claim(consumer, keys)
        }

    async def claim_commands(
        self,
        pairs: Sequence[tuple[str, str]],
        actions: Mapping[tuple[str, str], tuple[str, str]],
    ) -> tuple[set[tuple[str, str]], dict[tuple[str, str], str | None]]:
        fresh = await self.claim_each(pairs)
        undo = list(dict.fromkeys(actions[p] for p in pairs if p in fresh and p in actions))
        if not undo:
            return fresh, {}
        found = await self.claim_each(undo)
        ran: dict[str, list[str]] = {}
        for consumer, key in undo:
            if (consumer, key) not in found:
                ran.setdefault(consumer, []).append(key)
        stored = {
            (consumer, key): reply
            for consumer, keys in ran.items()
            for key, reply in (await self.replies(consumer, keys)).items()
        }
        return fresh | found, stored

    async def replies(self, consumer: str, keys: Sequence[str]) -> dict[str, str | None]:
        if not keys:
            return {}
        result = await self._conn.execute(
            select(saga_inbox.c.key, saga_inbox.c.reply).where(
                saga_inbox.c.consumer == consumer, self._store.among(saga_inbox.c.key, keys)
            )
        )
        return {row.key: row.reply for row in result}

    async def set_reply(self, consumer: str, key: str, reply: str) -> None:
        await self._conn.execute(
            self._store.statements.set_reply,
            {"b_consumer": consumer, "b_key": key, "b_reply": reply},
        )

    async def set_replies(self, rows: Sequence[tuple[str, str, str]]) -> None:
        """Many ``(consumer, key, reply)`` at once (what set_reply does for each)."""
        if rows:
            await self._conn.execute(
                self._store.statements.set_reply,
                [{"b_consumer": c, "b_key": k, "b_reply": r} for c, k, r in rows],
            )

    async def forget(self, consumer: str, key: str) -> None:
        await self._conn.execute(
            self._store.statements.forget, {"b_consumer": consumer, "b_key": key}
        )


class InboxStatements:
    """The inbox statements every command runs, built once per store: building them
    anew each time cost more Python than executing them."""

    def __init__(self, insert: InsertFactory) -> None:
        same = (
            saga_inbox.c.consumer == bindparam("b_consumer"),
            saga_inbox.c.key == bindparam("b_key"),
        )
        self.claim = (
            insert(saga_inbox)
            .on_conflict_do_nothing(index_elements=["consumer", "key"])
            .returning(saga_inbox.c.key)
        )
        self.set_reply = update(saga_inbox).where(*same).values(reply=bindparam("b_reply"))
        self.forget = delete(saga_inbox).where(*same)
