"""Invariant checks over saga logs, for tests and the fault-injection harness."""

from __future__ import annotations

from collections.abc import Sequence

from sagakit.errors import CorruptLogError
from sagakit.model.events import StoredEvent
from sagakit.model.state import SagaState
from sagakit.model.transitions import fold_stored


def check_log(saga_id: str, events: Sequence[StoredEvent]) -> SagaState:
    """Fold a whole stored log, raising CorruptLogError on any gap or backward move."""
    return fold_stored(saga_id, events)


def forward_only(saga_id: str, events: Sequence[StoredEvent]) -> list[str]:
    """Every violation found in one log (empty when the log is a legal forward history)."""
    try:
        fold_stored(saga_id, events)
    except CorruptLogError as exc:
        return [str(exc)]
    return []
