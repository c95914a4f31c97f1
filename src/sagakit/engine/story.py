"""Telling what an orchestrator's committed decisions did: counted in its metrics, and
told in its log (under ``sagakit.orchestrator``) as the story of each saga."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from sagakit.model.decision import Decision
from sagakit.model.describe import describe, outcome
from sagakit.model.events import (
    CompensationFailed,
    OperatorIntervened,
    ReplyIgnored,
    SagaCompleted,
    SagaEvent,
    StepFailed,
)
from sagakit.model.state import SagaState
from sagakit.observe import tracing
from sagakit.observe.logs import get_logger

if TYPE_CHECKING:
    from sagakit.observe.metrics import Metrics

log = get_logger("sagakit.orchestrator")
_story = logging.getLogger("sagakit.orchestrator")


def tell(decisions: Iterable[Decision], metrics: Metrics | None) -> None:
    """After a commit: count it, and tell its story."""
    if metrics is not None:
        decisions = list(decisions)
        metrics.observe(decisions)
    if not _story.isEnabledFor(logging.INFO):
        return  # nothing below info is worth the formatting on a busy path
    for decision in decisions:
        for event in decision.events:
            _log_event(decision.state, event)


def _log_event(state: SagaState, event: SagaEvent) -> None:
    # Routine progress is debug; what a reader of the story needs (failures, undoing,
    # the end) is info or louder.
    kind = outcome(event)
    if kind == "failed":
        level = logging.WARNING
    elif kind == "undo" or isinstance(
        event, SagaCompleted | StepFailed | CompensationFailed | ReplyIgnored | OperatorIntervened
    ):
        level = logging.INFO
    else:
        level = logging.DEBUG
    if not _story.isEnabledFor(level):
        return
    log.log(
        level,
        f"{state.key or state.definition + ' ' + state.saga_id[:8]}: {describe(event)}",
        saga_id=state.saga_id,
        step=getattr(event, "step", None),
        event_type=event.event_type,
        trace_id=tracing.trace_id(state.traceparent),
    )
