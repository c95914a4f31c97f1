"""The store's smaller tables, as the features that keep state there see them: semantic
locks, circuit breakers, routing rule sets, orchestrators' heartbeats and the operators'
record. ``stores/records.py`` implements them on SQL."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class LockRecords(Protocol):
    """Semantic locks (sagakit.engine.locks): who holds a resource, who waits in line."""

    async def holder(self, resource: str) -> str | None: ...

    async def first_in_line(self, resource: str) -> str | None: ...

    async def take(
        self, resource: str, *, saga_id: str, participant: str, step: str, at: float
    ) -> bool:
        """Take ``resource`` if nobody holds it (and leave its line); whether it did."""
        ...

    async def queue(self, resource: str, saga_id: str, *, at: float) -> None: ...

    async def release(self, resource: str, saga_id: str) -> None: ...

    async def release_saga(self, saga_id: str, participant: str) -> int:
        """Every lock and place in line of ``saga_id`` at ``participant``; how many locks."""
        ...

    async def count_held(self, saga_id: str) -> int: ...

    async def all(self) -> list[dict[str, Any]]: ...


class BreakerRecords(Protocol):
    """Circuit breakers' state (sagakit.engine.breakers), as rows by name."""

    async def load(self, names: Sequence[str]) -> list[dict[str, Any]]: ...

    async def save(self, rows: Sequence[dict[str, Any]]) -> None: ...

    async def all(self) -> list[dict[str, Any]]: ...


class RuleRecords(Protocol):
    """Published routing rule sets (sagakit.engine.rules), one per saga and version."""

    async def newest(self, saga: str) -> int | None: ...

    async def source(self, saga: str, version: int) -> str | None: ...

    async def add(self, saga: str, version: int, source: str, *, at: float) -> None: ...

    async def published(self) -> list[tuple[str, int, float]]: ...


class HeartbeatRecords(Protocol):
    """Running orchestrators' beats (sagakit.engine.liveness)."""

    async def beat(self, group: str, member: str, *, at: float, forget_before: float) -> None: ...

    async def newest(self, group: str) -> float | None: ...


class AuditRecords(Protocol):
    """Operators' actions on the record (sagakit.audit)."""

    async def add(
        self, *, at: float, who: str, action: str, target: str, note: str, via: str
    ) -> None: ...

    async def recent(
        self, *, limit: int, offset: int, target: str | None = None
    ) -> list[dict[str, Any]]: ...


@dataclass(frozen=True, slots=True)
class Records:
    """The store's smaller tables, inside one transaction (``UnitOfWork.records``)."""

    locks: LockRecords
    breakers: BreakerRecords
    rules: RuleRecords
    heartbeats: HeartbeatRecords
    audit: AuditRecords
