"""Reading sagas back from the SQL saga store: loading them from their logs, and what is
read outside any transaction.

A load reads each saga's head from the ``sagas`` projection, its snapshot if it has a
usable one, and the events after it, and folds them into the saga's state; a unit loads
so (row-locked where rows lock) before it decides. The other reads answer the runtime
and the operator: one saga, its log, and the projection's rows and counts. Searches and
counts over time are :class:`sagakit.stores.findings.SagaFindings`.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from sagakit.errors import CorruptLogError, UnknownSagaError
from sagakit.model.events import StoredEvent
from sagakit.model.state import SNAPSHOT_SCHEMA, SagaState, state_from_json
from sagakit.model.transitions import fold_stored
from sagakit.ports import Loaded, SagaRow
from sagakit.stores.schema import saga_events, saga_snapshots, sagas


def fold_into(
    loaded: Loaded,
    saga_id: str,
    events: list[StoredEvent],
    snapshot: SagaState | None,
    version: int,
) -> None:
    """Fold one saga's events (after ``snapshot``) into ``loaded``: its state, or why its
    log cannot be read (it must end at the projection's ``version``)."""
    loaded.events_read += len(events)
    try:
        state = fold_stored(saga_id, events, snapshot)
    except CorruptLogError as exc:
        loaded.broken[saga_id] = exc
        return
    if state.version != version:
        loaded.broken[saga_id] = CorruptLogError(
            saga_id,
            state.version + 1,
            f"missing: the log ends at position {state.version} "
            f"but the projection records {version} events",
        )
        return
    loaded.states[saga_id] = state


class SagaReads:
    """Loads and reads of :class:`sagakit.stores.sql.SqlSagaStore`; none but a unit's
    load takes a lock."""

    #: SqlSagaStore's: whether the database locks the rows a unit loads.
    row_locks: bool

    def _read(self) -> AbstractAsyncContextManager[AsyncConnection]:
        raise NotImplementedError  # SqlSagaStore's

    def among(self, column: Any, values: Sequence[Any]) -> ColumnElement[bool]:
        raise NotImplementedError  # SqlSagaStore's

    async def load_on(
        self, conn: AsyncConnection, saga_ids: Sequence[str], *, lock: bool
    ) -> Loaded:
        ids = sorted(set(saga_ids))
        loaded = Loaded()
        if not ids:
            return loaded
        head_query = (
            select(sagas.c.saga_id, sagas.c.version, sagas.c.snapshot_version)
            .where(self.among(sagas.c.saga_id, ids))
            .order_by(sagas.c.saga_id)
        )
        if lock and self.row_locks:
            head_query = head_query.with_for_update()
        heads = {row.saga_id: row for row in await conn.execute(head_query)}
        if not heads:
            return loaded
        snapshots: dict[str, SagaState] = {}
        snapped = [sid for sid, head in heads.items() if head.snapshot_version > 0]
        if snapped:
            result = await conn.execute(
                select(saga_snapshots.c.saga_id, saga_snapshots.c.version, saga_snapshots.c.state)
                .where(self.among(saga_snapshots.c.saga_id, snapped))
                .where(saga_snapshots.c.schema == SNAPSHOT_SCHEMA)
            )
            for row in result:
                if row.version == heads[row.saga_id].snapshot_version:
                    snapshots[row.saga_id] = state_from_json(row.state)
        events: dict[str, list[StoredEvent]] = {sid: [] for sid in heads}
        # Sagas with a usable snapshot (or none at all) read only what follows it.
        usable = [sid for sid, h in heads.items() if h.snapshot_version == 0 or sid in snapshots]
        stale = [sid for sid in heads if sid not in usable]
        queries = []
        if usable:
            queries.append(
                select(saga_events)
                .join(sagas, sagas.c.saga_id == saga_events.c.saga_id)
                .where(self.among(saga_events.c.saga_id, usable))
                .where(saga_events.c.seq > sagas.c.snapshot_version)
            )
        if stale:
            queries.append(select(saga_events).where(self.among(saga_events.c.saga_id, stale)))
        for query in queries:
            result = await conn.execute(query.order_by(saga_events.c.saga_id, saga_events.c.seq))
            for row in result:
                events[row.saga_id].append(_stored(row))
        for sid, head in heads.items():
            fold_into(loaded, sid, events[sid], snapshots.get(sid), head.version)
        return loaded

    # ------------------------------------------------------------------ outside a unit

    async def get(self, saga_id: str) -> SagaState:
        async with self._read() as conn:
            if conn.dialect.name == "postgresql":
                # The head, the snapshot and the events must come from one snapshot of the
                # database: read committed would let an append land between them.
                await conn.execution_options(isolation_level="REPEATABLE READ")
            loaded = await self.load_on(conn, [saga_id], lock=False)
        if saga_id in loaded.broken:
            raise loaded.broken[saga_id]
        if saga_id not in loaded.states:
            raise UnknownSagaError(f"no saga with id {saga_id!r}")
        return loaded.states[saga_id]

    async def resolve(self, prefix: str) -> str:
        """The full id of the one saga whose id is or starts with ``prefix``."""
        if not prefix:
            raise UnknownSagaError("no saga with an empty id")
        async with self._read() as conn:
            exact = await conn.scalar(select(sagas.c.saga_id).where(sagas.c.saga_id == prefix))
            if exact is not None:
                return str(exact)
            # the id's own _ and % are characters, not LIKE wildcards
            escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            result = await conn.execute(
                select(sagas.c.saga_id)
                .where(sagas.c.saga_id.like(escaped + "%", escape="\\"))
                .order_by(sagas.c.saga_id)
                .limit(11)
            )
            found = [row[0] for row in result]
        if not found:
            raise UnknownSagaError(f"no saga with id {prefix!r}")
        if len(found) > 1:
            listed = ", ".join(found[:10]) + (" and more" if len(found) > 10 else "")
            raise UnknownSagaError(f"{prefix!r} is the start of several saga ids: {listed}")
        return str(found[0])

    async def history(self, saga_id: str) -> list[StoredEvent]:
        async with self._read() as conn:
            result = await conn.execute(
                select(saga_events)
                .where(saga_events.c.saga_id == saga_id)
                .order_by(saga_events.c.seq)
            )
            events = [_stored(row) for row in result]
        if not events:
            raise UnknownSagaError(f"no saga with id {saga_id!r}")
        return events

    async def list_sagas(
        self,
        *,
        status: str | None = None,
        definition: str | None = None,
        since: float | None = None,
        until: float | None = None,
        key: str | None = None,
        steps: Sequence[str] | None = None,
        limit: int = 100,
        offset: int = 0,
        oldest_first: bool = False,
    ) -> list[SagaRow]:
        """Sagas from the projection, newest change first (or oldest, for a watcher)."""
        order = (
            (sagas.c.updated_at, sagas.c.saga_id)
            if oldest_first
            else (
                sagas.c.updated_at.desc(),
                sagas.c.saga_id,
            )
        )
        query = _filtered(
            select(sagas), status, definition, since=since, until=until, key=key, steps=steps
        ).order_by(*order)
        async with self._read() as conn:
            result = await conn.execute(query.limit(limit).offset(offset))
            return [_row(r) for r in result]

    async def row(self, saga_id: str) -> SagaRow | None:
        """One saga's projection row, if it exists."""
        async with self._read() as conn:
            found = (await conn.execute(select(sagas).where(sagas.c.saga_id == saga_id))).first()
        return _row(found) if found is not None else None

    async def count_sagas(
        self,
        *,
        status: str | None = None,
        definition: str | None = None,
        since: float | None = None,
        until: float | None = None,
        key: str | None = None,
        steps: Sequence[str] | None = None,
    ) -> int:
        query = _filtered(
            select(func.count()).select_from(sagas),
            status,
            definition,
            since=since,
            until=until,
            key=key,
            steps=steps,
        )
        async with self._read() as conn:
            return int(await conn.scalar(query) or 0)

    async def count_by_status(self) -> dict[str, int]:
        async with self._read() as conn:
            result = await conn.execute(
                select(sagas.c.status, func.count()).group_by(sagas.c.status)
            )
            return {row[0]: row[1] for row in result}

    async def active(self, definitions: Sequence[str]) -> list[SagaRow]:
        query = select(sagas).where(
            sagas.c.status.in_(("running", "compensating")),
            sagas.c.current_step.is_not(None),
            self.among(sagas.c.definition, sorted(set(definitions))),
        )
        async with self._read() as conn:
            return [_row(r) for r in await conn.execute(query)]

    async def statuses(self, saga_ids: Sequence[str]) -> dict[str, str]:
        return {saga_id: status for saga_id, (status, _) in (await self.heads(saga_ids)).items()}

    async def heads(self, saga_ids: Sequence[str]) -> dict[str, tuple[str, int]]:
        """Status and log version of each saga that exists, from the projection."""
        ids = list(dict.fromkeys(saga_ids))
        found: dict[str, tuple[str, int]] = {}
        async with self._read() as conn:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                result = await conn.execute(
                    select(sagas.c.saga_id, sagas.c.status, sagas.c.version).where(
                        sagas.c.saga_id.in_(chunk)
                    )
                )
                found.update({row.saga_id: (row.status, row.version) for row in result})
        return found

    async def next_wake(self, saga_ids: Sequence[str]) -> float | None:
        """The earliest retry or deadline among these sagas, if any is pending."""
        async with self._read() as conn:
            wake = await conn.scalar(
                select(func.min(sagas.c.wake_at)).where(sagas.c.saga_id.in_(list(saga_ids)))
            )
        return float(wake) if wake is not None else None


def _filtered(
    query: Any,
    status: str | None,
    definition: str | None,
    *,
    since: float | None,
    until: float | None,
    key: str | None,
    steps: Sequence[str] | None,
) -> Any:
    if status:
        query = query.where(sagas.c.status == status)
    if definition:
        query = query.where(sagas.c.definition == definition)
    if since is not None:
        query = query.where(sagas.c.updated_at >= since)
    if until is not None:
        query = query.where(sagas.c.updated_at <= until)
    if key:
        query = query.where(sagas.c.key == key)
    if steps is not None:
        query = query.where(sagas.c.current_step.in_(list(steps)))
    return query


def _row(r: Any) -> SagaRow:
    return SagaRow(
        saga_id=r.saga_id,
        definition=r.definition,
        definition_version=r.definition_version,
        key=r.key,
        status=r.status,
        current_step=r.current_step,
        deadline=r.deadline,
        version=r.version,
        created_at=r.created_at,
        updated_at=r.updated_at,
        reason=r.reason,
    )


def _stored(row: Any) -> StoredEvent:
    return StoredEvent(
        saga_id=row.saga_id,
        seq=row.seq,
        type=row.type,
        schema_version=row.schema_version,
        data=row.data,
        recorded_at=row.recorded_at,
    )
