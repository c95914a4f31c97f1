"""The outbox of the SQL saga store: how committed messages leave it.

A unit writes outbox rows in the transaction that decides them. A publisher in the
same process may publish them as that transaction commits (publish on commit); a relay
claims what is left in batches, publishes it in the order each saga wrote it for each
queue, and marks it sent. A relay hears of new rows from this process's commits, from
other processes' NOTIFY where the database has it, and from its poll. Pruning drops
rows sent long ago.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Select, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from sagakit.model.messages import TransportMessage
from sagakit.ports import Clock, OutboxRow
from sagakit.stores.schema import saga_outbox

if TYPE_CHECKING:
    from sagakit.stores.unit import SqlUnit


@dataclass(slots=True)
class SqlOutboxClaim:
    rows: list[OutboxRow]
    sent: list[int] = field(default_factory=list)

    def mark_sent(self, ids: Sequence[int]) -> None:
        self.sent.extend(ids)


def in_saga_order(rows: list[OutboxRow], lowest: Mapping[tuple[str, str], int]) -> list[OutboxRow]:
    """``rows`` (in id order) but those of any saga and destination whose ``lowest``
    unsent row is earlier than its first row here: that row is held by another claim.

    Order is kept per saga *and destination*: what one queue gets of one saga arrives in
    the order it was written, while a saga's messages to different queues, which no
    consumer could order anyway, never wait for each other (a reply does not wait for
    its command's confirm)."""
    first: dict[tuple[str, str], int] = {}
    for row in rows:
        first.setdefault((row.saga_id, row.message.destination), row.id)
    blocked = {key for key, low in lowest.items() if low < first.get(key, low)}
    return [row for row in rows if (row.saga_id, row.message.destination) not in blocked]


class SqlOutbox:
    """The outbox of :class:`sagakit.stores.sql.SqlSagaStore`, as its relay and its
    publisher see it. An adapter may say the claim (``_claim_in_order``) and the
    mark-sent (``_mark_sent``) its own way."""

    #: SqlSagaStore's: the store's clock, and whether the database locks rows.
    clock: Clock
    row_locks: bool

    def __init__(self) -> None:
        self._outbox_event = asyncio.Event()
        # Claims that committed (claim_outbox), and whether rows wait for the next one.
        self._claims_released = 0
        self._waiting_on_claims = False
        #: Whether committing outbox rows wakes relays in other processes (NOTIFY). A
        #: runtime that runs its own outbox (the fused one) turns it off.
        self.notify_outbox = True
        #: Told of each commit's outbox messages (publish on commit; see
        #: sagakit.engine.publisher); while set, commits wake no relay.
        self._on_commit: Callable[[Sequence[TransportMessage]], None] | None = None
        self._publisher_grace = 1.0

    def _begin(self) -> AbstractAsyncContextManager[AsyncConnection]:
        raise NotImplementedError  # SqlSagaStore's

    def _read(self) -> AbstractAsyncContextManager[AsyncConnection]:
        raise NotImplementedError  # SqlSagaStore's

    def unit(self) -> AbstractAsyncContextManager[SqlUnit]:
        raise NotImplementedError  # SqlSagaStore's

    def among(self, column: Any, values: Sequence[Any]) -> ColumnElement[bool]:
        raise NotImplementedError  # SqlSagaStore's

    def lock_skipping(self, query: Select[Any]) -> Select[Any]:
        raise NotImplementedError  # SqlSagaStore's

    # ------------------------------------------------------------------ on commit

    @property
    def wakes_relays(self) -> bool:
        """Whether a commit that wrote outbox rows wakes relays (NOTIFY, and this
        process's): not while a publisher publishes on commit, nor for a fused runtime."""
        return self.notify_outbox and self._on_commit is None

    def publish_on_commit(
        self, hook: Callable[[Sequence[TransportMessage]], None] | None, *, grace: float = 1.0
    ) -> None:
        self._on_commit = hook
        self._publisher_grace = grace

    @property
    def publisher_grace(self) -> float | None:
        """Seconds the relay leaves a new outbox row to the publisher (None: none)."""
        return None if self._on_commit is None else self._publisher_grace

    def _outbox_committed(self, outgoing: Sequence[TransportMessage]) -> None:
        """A transaction that wrote outbox rows committed: the publisher publishes its
        messages, or (rows without them, or no publisher) the relay here wakes."""
        if self._on_commit is not None and outgoing:
            self._on_commit(outgoing)
        else:
            self._outbox_event.set()

    async def _notify(self, conn: AsyncConnection) -> None:
        """Tell other processes the outbox has work; once per transaction."""

    # ------------------------------------------------------------------ the relay's side

    async def unsent(self, destinations: Sequence[str]) -> list[OutboxRow]:
        query = (
            select(saga_outbox)
            .where(saga_outbox.c.sent_at.is_(None))
            .where(self.among(saga_outbox.c.destination, list(destinations)))
            .order_by(saga_outbox.c.id)
        )
        async with self._read() as conn:
            return _outbox_rows(await conn.execute(query))

    async def mark_sent(self, ids: Sequence[int]) -> None:
        if ids:
            async with self.unit() as unit:
                await self._mark_sent(unit.connection, ids)

    async def mark_sent_messages(self, message_ids: Sequence[str]) -> None:
        if message_ids:
            async with self._begin() as conn:
                await conn.execute(
                    update(saga_outbox)
                    .where(self.among(saga_outbox.c.message_id, list(message_ids)))
                    .where(saga_outbox.c.sent_at.is_(None))
                    .values(sent_at=self.clock.now())
                )

    @asynccontextmanager
    async def claim_outbox(
        self, *, limit: int, exclude: Sequence[int] = (), older_than: float | None = None
    ) -> AsyncIterator[SqlOutboxClaim]:
        if self.row_locks:
            # Hold the rows for the whole publish: a relay that dies releases them at once.
            async with self._begin() as conn:
                released = self._claims_released
                rows, kept = await self._claim_in_order(conn, limit, exclude, older_than)
                if len(kept) < len(rows):
                    self._held_back(released)
                claim = SqlOutboxClaim(kept)
                yield claim
                if claim.sent:
                    await self._mark_sent(conn, claim.sent)
            if claim.sent:
                self._claims_released += 1
                if self._waiting_on_claims:
                    self._waiting_on_claims = False
                    self._outbox_event.set()
            return
        async with self._read() as conn:
            claim = SqlOutboxClaim(await self._claim_rows(conn, limit, exclude, older_than))
        yield claim
        if claim.sent:
            async with self.unit() as unit:
                await self._mark_sent(unit.connection, claim.sent)

    async def _claim_rows(
        self,
        conn: AsyncConnection,
        limit: int,
        exclude: Sequence[int],
        older_than: float | None = None,
    ) -> list[OutboxRow]:
        """The first ``limit`` unsent rows but ``exclude`` (and written before
        ``older_than``, if given), locked where rows lock."""
        query = (
            select(saga_outbox)
            .where(saga_outbox.c.sent_at.is_(None))
            .order_by(saga_outbox.c.id)
            .limit(limit)
        )
        if exclude:
            query = query.where(~self.among(saga_outbox.c.id, exclude))
        if older_than is not None:
            query = query.where(
                saga_outbox.c.relay_after.is_(None) | (saga_outbox.c.relay_after <= older_than)
            )
        return _outbox_rows(await conn.execute(self.lock_skipping(query)))

    async def _claim_in_order(
        self,
        conn: AsyncConnection,
        limit: int,
        exclude: Sequence[int],
        older_than: float | None = None,
    ) -> tuple[list[OutboxRow], list[OutboxRow]]:
        """The rows claimed (locked), and those of them that may go now (see
        _in_saga_order)."""
        rows = await self._claim_rows(conn, limit, exclude, older_than)
        return rows, await self._in_saga_order(conn, rows)

    async def _first_unsent(
        self, conn: AsyncConnection, saga_ids: list[str]
    ) -> dict[tuple[str, str], int]:
        """The id of each saga's earliest unsent row for each destination."""
        result = await conn.execute(
            select(saga_outbox.c.saga_id, saga_outbox.c.destination, func.min(saga_outbox.c.id))
            .where(saga_outbox.c.sent_at.is_(None), self.among(saga_outbox.c.saga_id, saga_ids))
            .group_by(saga_outbox.c.saga_id, saga_outbox.c.destination)
        )
        return {(row[0], row[1]): row[2] for row in result}

    async def _mark_sent(self, conn: AsyncConnection, ids: Sequence[int]) -> None:
        await conn.execute(
            update(saga_outbox)
            .where(self.among(saga_outbox.c.id, ids))
            .values(sent_at=self.clock.now())
        )

    async def _in_saga_order(self, conn: AsyncConnection, rows: list[OutboxRow]) -> list[OutboxRow]:
        """Drop the rows of any saga that has an earlier unsent row for the same
        destination outside this claim (held by another relay or batch), so what a queue
        gets of a saga is never published out of order."""
        if not rows:
            return rows
        lowest = await self._first_unsent(conn, list({row.saga_id for row in rows}))
        return in_saga_order(rows, lowest)

    def _held_back(self, released: int) -> None:
        """A claim left rows behind an earlier row of their saga that another claim holds
        (one of this process's relay batches, typically). They can go once that claim
        commits, which wakes the relay here, rather than at its next poll; if a claim
        committed while ours was reading (``released`` changed), at once."""
        if self._claims_released != released:
            self._outbox_event.set()
        else:
            self._waiting_on_claims = True

    async def wait_for_outbox(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._outbox_event.wait(), timeout)
        self._outbox_event.clear()

    async def outbox_lag(self, now: float) -> float:
        async with self._read() as conn:
            oldest = await conn.scalar(
                select(func.min(saga_outbox.c.created_at)).where(saga_outbox.c.sent_at.is_(None))
            )
        return max(0.0, now - oldest) if oldest is not None else 0.0

    async def unsent_count(self) -> int:
        async with self._read() as conn:
            count = await conn.scalar(
                select(func.count()).select_from(saga_outbox).where(saga_outbox.c.sent_at.is_(None))
            )
        return int(count or 0)

    async def prune_outbox(self, sent_before: float) -> int:
        async with self.unit() as unit:
            result = await unit.connection.execute(
                delete(saga_outbox).where(saga_outbox.c.sent_at < sent_before)
            )
        return int(result.rowcount or 0)


def _outbox_rows(result: Any) -> list[OutboxRow]:
    return [
        OutboxRow(
            id=r.id,
            message=TransportMessage(
                destination=r.destination,
                message_id=r.message_id,
                body=r.body.encode(),
                headers=json.loads(r.headers),
            ),
            saga_id=r.saga_id,
            created_at=r.created_at,
        )
        for r in result
    ]
