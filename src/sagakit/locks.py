"""Semantic locks: a saga marks a record as its own, pending, inside a participant's
local transaction, so other sagas do not build on work that may yet be undone.

Sagas give up isolation; this gives back the part that matters. A handler takes a
lock with :meth:`Locks.acquire` and names what another saga finding it held should
do, its :class:`LockPolicy`:

* ``FAIL`` - refuse at once (the saga compensates);
* ``RETRY`` - try again later (the step is retried with its backoff), in no order;
* ``QUEUE`` - wait in line: when the lock frees, the saga that has waited longest
  takes it.

Locks belong to the saga, not the step: they outlive the step that took them, and the
orchestrator releases them when the saga ends - completed, compensated, or left for a
person - so they never leak. :meth:`Locks.ensure_held` re-reads a lock before work
that must not happen without it (the pivot, say): the version check of the pattern.
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from sagakit.errors import StepRejected, TransientError
from sagakit.stores.schema import saga_lock_waiters, saga_locks


class LockPolicy(StrEnum):
    FAIL = "fail"
    RETRY = "retry"
    QUEUE = "queue"


class LockBusy(TransientError):
    """Another saga holds the lock (or waited for it longer); try again later."""

    def __init__(self, resource: str, holder: str | None, policy: LockPolicy) -> None:
        who = f"saga {holder}" if holder else "a saga that has waited longer"
        super().__init__(f"{resource} is held by {who}")
        self.resource = resource
        self.holder = holder
        self.policy = policy


def _insert(conn: AsyncConnection) -> Any:
    from sqlalchemy.dialects import postgresql, sqlite

    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


class Locks:
    """The semantic locks of one saga at one participant, within one transaction."""

    def __init__(self, conn: AsyncConnection, *, participant: str, saga_id: str, step: str) -> None:
        self._conn = conn
        self.participant = participant
        self.saga_id = saga_id
        self.step = step
        #: Whether this step took, kept or queued for a lock (the orchestrator then
        #: releases the saga's locks here when it ends).
        self.touched = False

    async def acquire(self, resource: str, *, policy: LockPolicy = LockPolicy.RETRY) -> None:
        """Mark ``resource`` as this saga's. Taking a lock the saga already holds is fine."""
        self.touched = self.touched or policy is LockPolicy.QUEUE
        holder = await self.holder(resource)
        if holder == self.saga_id:
            self.touched = True
            return
        if holder is None and policy is LockPolicy.QUEUE:
            first = await self._conn.scalar(
                select(saga_lock_waiters.c.saga_id)
                .where(saga_lock_waiters.c.resource == resource)
                .order_by(saga_lock_waiters.c.since, saga_lock_waiters.c.saga_id)
                .limit(1)
            )
            if first is not None and first != self.saga_id:
                raise LockBusy(resource, None, policy)
        if holder is None:
            stmt = (
                _insert(self._conn)(saga_locks)
                .values(
                    resource=resource,
                    saga_id=self.saga_id,
                    participant=self.participant,
                    step=self.step,
                    acquired_at=time.time(),
                )
                .on_conflict_do_nothing(index_elements=["resource"])
                .returning(saga_locks.c.resource)
            )
            if await self._conn.scalar(stmt) is not None:
                self.touched = True
                await self._conn.execute(
                    delete(saga_lock_waiters).where(
                        saga_lock_waiters.c.resource == resource,
                        saga_lock_waiters.c.saga_id == self.saga_id,
                    )
                )
                return
            holder = await self.holder(resource)  # someone took it a moment ago
        if policy is LockPolicy.FAIL:
            raise StepRejected(f"{resource} is held by saga {holder}")
        raise LockBusy(resource, holder, policy)

    async def holder(self, resource: str) -> str | None:
        """The saga holding ``resource``, if any."""
        found = await self._conn.scalar(
            select(saga_locks.c.saga_id).where(saga_locks.c.resource == resource)
        )
        return str(found) if found is not None else None

    async def ensure_held(self, resource: str) -> None:
        """Refuse the step unless this saga still holds ``resource`` (re-read it before
        the pivot: what this saga decided on must still be its own)."""
        holder = await self.holder(resource)
        if holder != self.saga_id:
            raise StepRejected(f"{resource} is no longer held by this saga (holder: {holder})")

    async def release(self, resource: str) -> None:
        await self._conn.execute(
            delete(saga_locks).where(
                saga_locks.c.resource == resource, saga_locks.c.saga_id == self.saga_id
            )
        )

    async def count_held(self) -> int:
        found = await self._conn.scalar(
            select(func.count()).select_from(saga_locks).where(saga_locks.c.saga_id == self.saga_id)
        )
        return int(found or 0)


async def queue_for(conn: AsyncConnection, resource: str, saga_id: str) -> None:
    """Put ``saga_id`` in line for ``resource`` (done outside the failed step's savepoint,
    so the place in line survives the step's rollback)."""
    await conn.execute(
        _insert(conn)(saga_lock_waiters)
        .values(resource=resource, saga_id=saga_id, since=time.time())
        .on_conflict_do_nothing(index_elements=["resource", "saga_id"])
    )


async def release_saga(conn: AsyncConnection, saga_id: str, participant: str) -> int:
    """Release every lock (and place in line) ``saga_id`` has at ``participant``."""
    released = await conn.execute(
        delete(saga_locks).where(
            saga_locks.c.saga_id == saga_id, saga_locks.c.participant == participant
        )
    )
    await conn.execute(delete(saga_lock_waiters).where(saga_lock_waiters.c.saga_id == saga_id))
    return int(released.rowcount or 0)
