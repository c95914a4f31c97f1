"""The order held writes go out in: by the rows they touch, then by their other values.

Every transaction, in every process, sends one group of held writes (see
:mod:`sagakit.engine.held_writes`) in this order, so two transactions that write the same
rows take their row locks in the same order and queue instead of deadlocking.
"""

from __future__ import annotations

import re
from decimal import Decimal
from functools import lru_cache
from typing import Any

_BIND = re.compile(r"(?<![:\w]):(\w+)")
_WHERE = re.compile(r"\bWHERE\b", re.IGNORECASE)
_UPSERT = re.compile(
    r"\bINSERT\s+INTO\s+[^(]+\(([^)]*)\)\s*VALUES\s*\(([^)]*)\)"
    r".*?\bON\s+CONFLICT\s*\(([^)]*)\)",
    re.IGNORECASE | re.DOTALL,
)


@lru_cache(maxsize=512)
def row_identity(sql: str) -> tuple[str, ...]:
    """The parameters of a write that say which row it touches, most significant first:
    the WHERE clause's for an UPDATE or DELETE, the conflict target's for an upsert,
    and every parameter in the order written for anything else."""
    upsert = _UPSERT.search(sql)
    if upsert is not None:
        columns = [c.strip().strip('"') for c in upsert.group(1).split(",")]
        values = [v.strip() for v in upsert.group(2).split(",")]
        bound = {c: v[1:] for c, v in zip(columns, values, strict=False) if _BIND.fullmatch(v)}
        target = [c.strip().strip('"') for c in upsert.group(3).split(",")]
        return tuple(dict.fromkeys(bound[c] for c in target if c in bound))
    where = _WHERE.search(sql)
    tail = sql[where.end() :] if where is not None else sql
    return tuple(dict.fromkeys(_BIND.findall(tail)))


def write_order(sql: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` sorted by the rows they touch (:func:`row_identity`), then by their other
    values: every transaction, in every process, takes the row locks of one group of
    writes in the same order, so two of them writing the same rows queue instead of
    deadlocking."""
    if len(rows) < 2:
        return rows
    first = row_identity(sql)
    names = first + tuple(sorted(n for n in rows[0] if n not in first))
    return sorted(rows, key=lambda row: tuple(_sortable(row.get(n)) for n in names))


def _sortable(value: Any) -> tuple[int, Any]:
    """A total order over parameter values of mixed types."""
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (1, int(value))
    if isinstance(value, int | float | Decimal):
        return (2, value)
    if isinstance(value, str):
        return (3, value)
    if isinstance(value, bytes):
        return (4, value)
    return (5, repr(value))
