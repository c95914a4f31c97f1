"""The SQL of the store's smaller tables: semantic locks, circuit breakers, routing rule
sets, orchestrators' heartbeats and the operators' record. Each works on one
connection, inside its caller's transaction; ``SqlUnit.records`` hands them out, so the
features that keep state here (:mod:`sagakit.engine.locks`, :mod:`sagakit.engine.breakers`,
:mod:`sagakit.engine.rules`, :mod:`sagakit.engine.liveness`, :mod:`sagakit.audit`) never
see a table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from sagakit.ports import Records
from sagakit.stores.schema import (
    saga_audit,
    saga_breakers,
    saga_heartbeats,
    saga_lock_waiters,
    saga_locks,
    saga_rules,
)


def _upsert(conn: Any) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


class SqlLockRecords:
    """Who holds which resource, and who waits in line for it."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def holder(self, resource: str) -> str | None:
        found = await self._conn.scalar(
            select(saga_locks.c.saga_id).where(saga_locks.c.resource == resource)
        )
        return str(found) if found is not None else None

    async def first_in_line(self, resource: str) -> str | None:
        found = await self._conn.scalar(
            select(saga_lock_waiters.c.saga_id)
            .where(saga_lock_waiters.c.resource == resource)
            .order_by(saga_lock_waiters.c.since, saga_lock_waiters.c.saga_id)
            .limit(1)
        )
        return str(found) if found is not None else None

    async def take(
        self, resource: str, *, saga_id: str, participant: str, step: str, at: float
    ) -> bool:
        """Take ``resource`` if nobody holds it (and leave its line); whether it did."""
        stmt = (
            _upsert(self._conn)(saga_locks)
            .values(
                resource=resource,
                saga_id=saga_id,
                participant=participant,
                step=step,
                acquired_at=at,
            )
            .on_conflict_do_nothing(index_elements=["resource"])
            .returning(saga_locks.c.resource)
        )
        if await self._conn.scalar(stmt) is None:
            return False
        await self._conn.execute(
            delete(saga_lock_waiters).where(
                saga_lock_waiters.c.resource == resource, saga_lock_waiters.c.saga_id == saga_id
            )
        )
        return True

    async def queue(self, resource: str, saga_id: str, *, at: float) -> None:
        await self._conn.execute(
            _upsert(self._conn)(saga_lock_waiters)
            .values(resource=resource, saga_id=saga_id, since=at)
            .on_conflict_do_nothing(index_elements=["resource", "saga_id"])
        )

    async def release(self, resource: str, saga_id: str) -> None:
        await self._conn.execute(
            delete(saga_locks).where(
                saga_locks.c.resource == resource, saga_locks.c.saga_id == saga_id
            )
        )

    async def release_saga(self, saga_id: str, participant: str) -> int:
        released = await self._conn.execute(
            delete(saga_locks).where(
                saga_locks.c.saga_id == saga_id, saga_locks.c.participant == participant
            )
        )
        await self._conn.execute(
            delete(saga_lock_waiters).where(saga_lock_waiters.c.saga_id == saga_id)
        )
        return int(released.rowcount or 0)

    async def count_held(self, saga_id: str) -> int:
        found = await self._conn.scalar(
            select(func.count()).select_from(saga_locks).where(saga_locks.c.saga_id == saga_id)
        )
        return int(found or 0)

    async def all(self) -> list[dict[str, Any]]:
        result = await self._conn.execute(select(saga_locks).order_by(saga_locks.c.resource))
        return [dict(row._mapping) for row in result]


class SqlBreakerRecords:
    """The state circuit breakers leave for the next process."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def load(self, names: Sequence[str]) -> list[dict[str, Any]]:
        result = await self._conn.execute(
            select(saga_breakers).where(saga_breakers.c.name.in_(list(names)))
        )
        return [dict(row._mapping) for row in result]

    async def save(self, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        stmt = _upsert(self._conn)(saga_breakers)
        stmt = stmt.on_conflict_do_update(
            index_elements=["name"],
            set_={
                c: getattr(stmt.excluded, c)
                for c in ("state", "failures", "opened_at", "updated_at")
            },
        )
        await self._conn.execute(stmt, list(rows))

    async def all(self) -> list[dict[str, Any]]:
        result = await self._conn.execute(select(saga_breakers).order_by(saga_breakers.c.name))
        return [dict(row._mapping) for row in result]


class SqlRuleRecords:
    """Published routing rule sets: one row per saga and version, never changed."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def newest(self, saga: str) -> int | None:
        found = await self._conn.scalar(
            select(func.max(saga_rules.c.version)).where(saga_rules.c.saga == saga)
        )
        return int(found) if found is not None else None

    async def source(self, saga: str, version: int) -> str | None:
        found = await self._conn.scalar(
            select(saga_rules.c.source).where(
                saga_rules.c.saga == saga, saga_rules.c.version == version
            )
        )
        return str(found) if found is not None else None

    async def add(self, saga: str, version: int, source: str, *, at: float) -> None:
        await self._conn.execute(
            insert(saga_rules).values(saga=saga, version=version, source=source, published_at=at)
        )

    async def published(self) -> list[tuple[str, int, float]]:
        result = await self._conn.execute(
            select(saga_rules.c.saga, saga_rules.c.version, saga_rules.c.published_at).order_by(
                saga_rules.c.saga, saga_rules.c.version
            )
        )
        return [(r.saga, r.version, r.published_at) for r in result]


class SqlHeartbeats:
    """Running orchestrators' beats: one row per group and process."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def beat(self, group: str, member: str, *, at: float, forget_before: float) -> None:
        where = (saga_heartbeats.c.group == group) & (saga_heartbeats.c.member == member)
        updated = await self._conn.execute(update(saga_heartbeats).where(where).values(beat_at=at))
        if not updated.rowcount:
            await self._conn.execute(
                insert(saga_heartbeats).values(group=group, member=member, beat_at=at)
            )
            # Rows of processes long gone are cleared by whoever starts next.
            await self._conn.execute(
                delete(saga_heartbeats).where(saga_heartbeats.c.beat_at < forget_before)
            )

    async def newest(self, group: str) -> float | None:
        found = await self._conn.scalar(
            select(func.max(saga_heartbeats.c.beat_at)).where(saga_heartbeats.c.group == group)
        )
        return float(found) if found is not None else None


class SqlAuditRecords:
    """Operators' actions on the record."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def add(
        self, *, at: float, who: str, action: str, target: str, note: str, via: str
    ) -> None:
        await self._conn.execute(
            insert(saga_audit).values(
                at=at, who=who, action=action, target=target, note=note, via=via
            )
        )

    async def recent(
        self, *, limit: int, offset: int, target: str | None = None
    ) -> list[dict[str, Any]]:
        query = select(saga_audit).order_by(saga_audit.c.at.desc(), saga_audit.c.id.desc())
        if target is not None:
            query = query.where(saga_audit.c.target == target)
        rows = await self._conn.execute(query.limit(limit).offset(offset))
        return [dict(row._mapping) for row in rows]


def records_on(conn: Any) -> Records:
    """The smaller tables' records, on ``conn`` (inside its caller's transaction)."""
    return Records(
        locks=SqlLockRecords(conn),
        breakers=SqlBreakerRecords(conn),
        rules=SqlRuleRecords(conn),
        heartbeats=SqlHeartbeats(conn),
        audit=SqlAuditRecords(conn),
    )
