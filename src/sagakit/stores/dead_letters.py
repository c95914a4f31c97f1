"""Dead letters in a saga store's own database: the embedded dead-letter queue.

The in-process transport has no broker to keep a dead letter, so it hands them here.
Replaying one writes it back into the same store's outbox (re-arming the original row
if it is still there), so the running process's relay delivers it again, through the
consumer's inbox like any other message, even when the replay is asked for from
another process such as ``sagakit dlq replay``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, select

from sagakit.model.messages import TransportMessage
from sagakit.ports import DeadLetter
from sagakit.stores.schema import saga_dead_letters, saga_outbox
from sagakit.stores.sql import SqlSagaStore


class SqlDeadLetters:
    """A durable dead-letter queue in ``store``'s database."""

    def __init__(self, store: SqlSagaStore) -> None:
        self.store = store

    async def add(self, letter: DeadLetter) -> None:
        async with self.store.unit() as unit:
            await unit.connection.execute(
                saga_dead_letters.insert().values(
                    id=letter.id,
                    queue=letter.queue,
                    message_id=letter.message.message_id,
                    headers=json.dumps(letter.message.headers),
                    body=letter.message.body,
                    reason=letter.reason,
                    detail=letter.detail[:4000],
                    attempts=letter.attempts,
                    dead_at=letter.dead_at,
                )
            )

    async def list(self, *, limit: int = 100) -> list[DeadLetter]:
        query = select(saga_dead_letters).order_by(saga_dead_letters.c.dead_at).limit(limit)
        async with self.store.unit() as unit:
            return [_letter(row) for row in await unit.connection.execute(query)]

    async def get(self, dead_letter_id: str) -> DeadLetter:
        query = select(saga_dead_letters).where(saga_dead_letters.c.id == dead_letter_id)
        async with self.store.unit() as unit:
            row = (await unit.connection.execute(query)).first()
        if row is None:
            raise LookupError(f"no dead letter {dead_letter_id!r}")
        return _letter(row)

    async def replay(self, ids: Sequence[str] | None = None) -> int:
        query = select(saga_dead_letters)
        if ids is not None:
            query = query.where(saga_dead_letters.c.id.in_(list(ids)))
        async with self.store.unit() as unit:
            rows = list(await unit.connection.execute(query))
            if not rows:
                return 0
            now = self.store.clock.now()
            outbox = [_outbox_row(row, now) for row in rows]
            stmt = self.store.insert(saga_outbox)
            stmt = stmt.on_conflict_do_update(
                index_elements=["message_id"],
                set_={
                    "destination": stmt.excluded.destination,
                    "body": stmt.excluded.body,
                    "headers": stmt.excluded.headers,
                    "sent_at": None,
                },
            )
            await unit.connection.execute(stmt, outbox)
            await unit.connection.execute(
                delete(saga_dead_letters).where(saga_dead_letters.c.id.in_([r.id for r in rows]))
            )
            unit.enqueued += len(outbox)  # wake the relay
        return len(rows)

    async def purge(self) -> int:
        async with self.store.unit() as unit:
            result = await unit.connection.execute(delete(saga_dead_letters))
        return int(result.rowcount or 0)

    async def depth(self) -> int:
        query = select(func.count()).select_from(saga_dead_letters)
        async with self.store.unit() as unit:
            return int(await unit.connection.scalar(query) or 0)


def _letter(row: Any) -> DeadLetter:
    return DeadLetter(
        id=row.id,
        message=TransportMessage(
            row.queue, row.message_id, bytes(row.body), json.loads(row.headers)
        ),
        queue=row.queue,
        reason=row.reason,
        detail=row.detail,
        attempts=row.attempts,
        dead_at=row.dead_at,
    )


def _outbox_row(row: Any, now: float) -> dict[str, Any]:
    headers = json.loads(row.headers)
    body = bytes(row.body)
    return {
        "message_id": row.message_id,
        "destination": row.queue,
        "saga_id": headers.get("saga_id", ""),
        "type": headers.get("type", "replayed"),
        "headers": row.headers,
        # The outbox keeps text; a body that is not UTF-8 was poison and stays so.
        "body": body.decode("utf-8", errors="replace"),
        "created_at": now,
        "sent_at": None,
    }
