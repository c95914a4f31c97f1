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

from sagakit.errors import StepRejected, TransientError
from sagakit.ports import LockRecords


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


class Locks:
    """The semantic locks of one saga at one participant, within one transaction (its
    records: ``unit.records.locks``)."""

    def __init__(self, records: LockRecords, *, participant: str, saga_id: str, step: str) -> None:
        self._records = records
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
            first = await self._records.first_in_line(resource)
            if first is not None and first != self.saga_id:
                raise LockBusy(resource, None, policy)
        if holder is None:
            taken = await self._records.take(
                resource,
                saga_id=self.saga_id,
                participant=self.participant,
                step=self.step,
                at=time.time(),
            )
            if taken:
                self.touched = True
                return
            holder = await self.holder(resource)  # someone took it a moment ago
        if policy is LockPolicy.FAIL:
            raise StepRejected(f"{resource} is held by saga {holder}")
        raise LockBusy(resource, holder, policy)

    async def holder(self, resource: str) -> str | None:
        """The saga holding ``resource``, if any."""
        return await self._records.holder(resource)

    async def ensure_held(self, resource: str) -> None:
        """Refuse the step unless this saga still holds ``resource`` (re-read it before
        the pivot: what this saga decided on must still be its own)."""
        holder = await self.holder(resource)
        if holder != self.saga_id:
            raise StepRejected(f"{resource} is no longer held by this saga (holder: {holder})")

    async def release(self, resource: str) -> None:
        await self._records.release(resource, self.saga_id)

    async def count_held(self) -> int:
        return await self._records.count_held(self.saga_id)


async def queue_for(records: LockRecords, resource: str, saga_id: str) -> None:
    """Put ``saga_id`` in line for ``resource`` (done outside the failed step's savepoint,
    so the place in line survives the step's rollback)."""
    await records.queue(resource, saga_id, at=time.time())


async def release_saga(records: LockRecords, saga_id: str, participant: str) -> int:
    """Release every lock (and place in line) ``saga_id`` has at ``participant``."""
    return await records.release_saga(saga_id, participant)
