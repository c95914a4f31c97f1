"""Every operator action on the record: who asked for what, on which saga or dead
letter, and why, in the saga store, whichever door it came through (the admin API or
the CLI). The saga's own log records the orchestrator's side (``OperatorIntervened``);
this table also holds what no saga log can, such as a dead letter's replay.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from sagakit.ports import UnitOfWork

Via = Literal["api", "cli"]


@dataclass(frozen=True, slots=True)
class Action:
    id: int
    at: float
    who: str
    action: str
    target: str
    note: str
    via: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def record(
    unit: UnitOfWork, *, who: str, action: str, target: str, note: str, via: Via, at: float
) -> None:
    """Put one action on the record, in ``unit``'s transaction."""
    await unit.records.audit.add(
        at=at, who=who[:200], action=action, target=target[:200], note=note, via=via
    )


async def recent(
    unit: UnitOfWork, *, limit: int = 100, offset: int = 0, target: str | None = None
) -> list[Action]:
    """Actions, newest first."""
    rows = await unit.records.audit.recent(limit=limit, offset=offset, target=target)
    return [
        Action(r["id"], r["at"], r["who"], r["action"], r["target"], r["note"], r["via"])
        for r in rows
    ]
