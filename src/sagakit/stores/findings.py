"""What an operator asks of a saga store beyond one saga: search, counts over time,
recent events. Shared by the SQLite and PostgreSQL stores (a mixin of SqlSagaStore);
an adapter says only how its database rounds a number down.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from sqlalchemy import ColumnElement, Integer, cast, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from sagakit.model.events import StoredEvent
from sagakit.ports import SagaRow, SagaSearch
from sagakit.stores.reads import _row, _stored
from sagakit.stores.schema import saga_events, sagas

#: The events that record where a saga stopped: it turned back, or it needs a person.
STOP_EVENTS = ("CompensationStarted", "SagaNeedsAttention")


def like_pattern(text: str, *, anywhere: bool) -> str:
    """``text`` as a LIKE pattern with ``\\`` as the escape: its own ``%`` and ``_`` are
    characters, ``*`` matches any text; ``anywhere`` lets it match inside a longer text."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    pattern = escaped.replace("*", "%")
    return f"%{pattern}%" if anywhere else pattern


class SagaFindings:
    """Reads for the dashboard and the admin API, over the ``sagas`` projection and the
    saga log. Each is one statement; none takes a lock."""

    def _read(self) -> AbstractAsyncContextManager[AsyncConnection]:
        raise NotImplementedError  # SqlSagaStore's

    def round_down(self, value: ColumnElement[Any]) -> ColumnElement[Any]:
        """``floor(value)`` for a value never negative: SQLite's CAST truncates it."""
        return cast(value, Integer)

    async def search_sagas(
        self, search: SagaSearch, *, limit: int = 50, offset: int = 0
    ) -> tuple[list[SagaRow], int]:
        """The sagas ``search`` finds, newest change (or longest) first, and how many."""
        where = _search_conditions(search)
        if search.order == "duration":
            order = ((sagas.c.updated_at - sagas.c.created_at).desc(), sagas.c.saga_id)
        else:
            order = (sagas.c.updated_at.desc(), sagas.c.saga_id)
        query = select(sagas).where(*where).order_by(*order).limit(limit).offset(offset)
        async with self._read() as conn:
            rows = [_row(r) for r in await conn.execute(query)]
            total = await conn.scalar(select(func.count()).select_from(sagas).where(*where))
        return rows, int(total or 0)

    async def count_by_definition(self) -> dict[tuple[str, int, str], int]:
        """How many sagas of each definition and version are in each status."""
        query = select(
            sagas.c.definition, sagas.c.definition_version, sagas.c.status, func.count()
        ).group_by(sagas.c.definition, sagas.c.definition_version, sagas.c.status)
        async with self._read() as conn:
            return {(r[0], int(r[1]), r[2]): int(r[3]) for r in await conn.execute(query)}

    async def events_per_interval(
        self, types: Sequence[str], *, since: float, until: float, every: float
    ) -> dict[str, list[int]]:
        """How many events of each of ``types`` the logs recorded in each interval of
        ``every`` seconds from ``since`` (inclusive) to ``until`` (exclusive)."""
        if every <= 0 or until <= since:
            raise ValueError("intervals need every > 0 and until > since")
        count = math.ceil((until - since) / every)
        bucket = self.round_down((saga_events.c.recorded_at - since) / every).label("bucket")
        inner = (
            select(saga_events.c.type, bucket)
            # a saga with an event in the window changed in it: the join reads only those
            .join(sagas, sagas.c.saga_id == saga_events.c.saga_id)
            .where(
                sagas.c.updated_at >= since,
                saga_events.c.type.in_(list(types)),
                saga_events.c.recorded_at >= since,
                saga_events.c.recorded_at < until,
            )
            .subquery()
        )
        query = select(inner.c.type, inner.c.bucket, func.count()).group_by(
            inner.c.type, inner.c.bucket
        )
        counts = {kind: [0] * count for kind in types}
        async with self._read() as conn:
            for kind, index, n in await conn.execute(query):
                slot = min(int(index), count - 1)  # a float's last digit may round up
                counts[kind][slot] += int(n)
        return counts

    async def recent_events(
        self, types: Sequence[str], *, since: float, limit: int
    ) -> list[StoredEvent]:
        """The newest ``limit`` events of ``types`` recorded at or after ``since``, newest
        first."""
        query = (
            select(saga_events)
            .join(sagas, sagas.c.saga_id == saga_events.c.saga_id)
            .where(
                sagas.c.updated_at >= since,
                saga_events.c.type.in_(list(types)),
                saga_events.c.recorded_at >= since,
            )
            .order_by(
                saga_events.c.recorded_at.desc(), saga_events.c.saga_id, saga_events.c.seq.desc()
            )
            .limit(limit)
        )
        async with self._read() as conn:
            return [_stored(row) for row in await conn.execute(query)]


def _search_conditions(search: SagaSearch) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if search.status:
        where.append(sagas.c.status == search.status)
    if search.definition:
        where.append(sagas.c.definition == search.definition)
    if search.definition_version is not None:
        where.append(sagas.c.definition_version == search.definition_version)
    if search.since is not None:
        where.append(sagas.c.updated_at >= search.since)
    if search.until is not None:
        where.append(sagas.c.updated_at <= search.until)
    if search.key:
        if "*" in search.key:
            where.append(sagas.c.key.like(like_pattern(search.key, anywhere=False), escape="\\"))
        else:
            where.append(sagas.c.key == search.key)
    if search.reason:
        pattern = like_pattern(search.reason.lower(), anywhere=True)
        where.append(func.lower(sagas.c.reason).like(pattern, escape="\\"))
    if search.stopped_at:
        where.append(_stopped_at(search.stopped_at))
    return where


def _stopped_at(step: str) -> ColumnElement[bool]:
    """The saga is at ``step`` now (one of its current steps), or its log says it turned
    back or asked for a person there. Events are stored as compact JSON (pydantic's), so
    ``"step":"<name>"`` appears in an event's data exactly when its step is that name
    (inside a string a quote is escaped, and step names are identifiers)."""
    name = like_pattern(step, anywhere=False)
    current = sagas.c.current_step
    in_log = exists(
        select(saga_events.c.seq).where(
            saga_events.c.saga_id == sagas.c.saga_id,
            saga_events.c.type.in_(STOP_EVENTS),
            saga_events.c.data.like(f'%"step":"{name}"%', escape="\\"),
        )
    )
    return or_(
        current == step,
        current.like(f"{name},%", escape="\\"),
        current.like(f"%,{name}", escape="\\"),
        current.like(f"%,{name},%", escape="\\"),
        in_log,
    )
