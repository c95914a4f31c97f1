"""The reference model: what sagakit promises a saga does, worked out without sagakit.

Written from the documentation (docs/concepts.md, the README, the docstrings of
definition.py), not from the engine's code, so that the engine and the model can
disagree. For one saga and its plans, :func:`predict` says how the saga ends, which
business effects are left in the participants' tables, and what its data holds.

The rules it encodes, in the words a user reads them:

* Steps run in order. An optional step runs only when a routing rule requires it; a
  rule may skip any other step but the pivot. A skipped step does nothing and is
  never undone. (Choreographed, optional steps never run and no rules are read.)
* Each try of a step follows its plan. A success is final: its writes commit with it,
  once, and its reply is merged into the saga's data. A refusal (``StepRejected``) is
  final too, and its writes are rolled back. An unexpected exception or a
  ``TransientError`` fails that try, its writes rolled back, and the step is tried
  again while its ``RetryPolicy`` allows (``attempts`` counts every try). A handler
  that runs past its step's timeout is cancelled, its writes rolled back, and that
  counts as a failed try too. A reply that is not a JSON value fails the step at once,
  for good (as a refusal does), with its writes rolled back.
* Choreographed, a failed try is retried by the transport's redelivery instead, as
  many times as it delivers (the step's ``RetryPolicy`` is not read).
* When a step fails for good: after the pivot (a retriable step) the saga needs
  attention; a pivot whose tries ran out needs attention (its outcome is unknown); a
  refused or poisoned pivot, and any failed compensatable step, turn the saga back.
* Turning back compensates, in reverse order, every compensatable step that ran. A
  step whose every try failed has nothing to undo (its compensation is a recorded
  no-op, its handler not called); a refused one is not compensated at all. A
  compensation is retried on failure within ``compensation_retry``; one that runs out
  leaves the saga needing attention, with the steps before it not undone.
* A saga whose steps all succeeded (or were skipped) is completed; one turned back
  and fully undone is compensated.
* Saga data and replies are JSON values: starting a saga with anything else (NaN, a
  ``Decimal``, a datetime, a set, bytes, an object) is refused, naming the key.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sagakit import StepKind
from tests.generative.scenario import (
    CHOREOGRAPHY_DELIVERIES,
    RETRYABLE,
    Act,
    Behaviour,
    Family,
    SagaCase,
    StepCase,
    reply_of,
)

#: One business effect: (step, "do") for an action's, (step, "undo") for a compensation's.
Effect = tuple[str, str]
#: The end of a saga whose start was refused: there is no saga.
NOT_STARTED = "not started"


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    REFUSED = "refused"
    POISONED = "poisoned"  # its reply was not a JSON value
    EXHAUSTED = "exhausted"  # every try it was allowed failed


@dataclass(slots=True)
class Prediction:
    """How a saga ends, by the model; ``story`` says why, one line per event."""

    status: str
    effects: Counter[Effect] = field(default_factory=Counter)
    data: dict[str, Any] = field(default_factory=dict)
    story: list[str] = field(default_factory=list)
    #: Roughly how long the saga takes, in seconds (to bound the wait for it).
    seconds: float = 0.0


def runs(saga: SagaCase, step: StepCase, family: Family) -> bool:
    """Whether the saga's routing runs ``step`` at all."""
    if step.optional:
        return family is Family.ORCHESTRATED and step.name in saga.required
    return not (family is Family.ORCHESTRATED and step.name in saga.skipped)


def try_step(step: StepCase, family: Family) -> tuple[Outcome, int, Behaviour]:
    """Try a step's action as its retry budget allows: the outcome, the tries it took,
    and the behaviour of the last try."""
    budget = CHOREOGRAPHY_DELIVERIES if family is Family.CHOREOGRAPHED else step.attempts
    attempt = 0
    while budget is None or attempt < budget:
        attempt += 1
        behaviour = step.action(attempt)
        if behaviour.act is Act.OK:
            return Outcome.SUCCEEDED, attempt, behaviour
        if behaviour.act is Act.REFUSE:
            return Outcome.REFUSED, attempt, behaviour
        if behaviour.act is Act.POISON:
            return Outcome.POISONED, attempt, behaviour
        if budget is None and attempt >= len(step.actions):
            raise ValueError(f"{step.name}: retried forever and never succeeds")
    return Outcome.EXHAUSTED, attempt, step.action(attempt)


def try_undo(step: StepCase, family: Family) -> tuple[bool, int]:
    """Try a step's compensation: whether it succeeded, and the tries it took."""
    budget = CHOREOGRAPHY_DELIVERIES if family is Family.CHOREOGRAPHED else step.undo_attempts
    for attempt in range(1, budget + 1):
        if step.compensation(attempt).act not in RETRYABLE | {Act.REFUSE}:
            return True, attempt
    return False, budget


def predict(saga: SagaCase, family: Family) -> Prediction:
    """How ``saga`` ends when run by ``family``, by the documented rules."""
    if saga.start_poison:
        story = [f"its data holds a {saga.start_poison}, not JSON: starting it is refused"]
        return Prediction(status=NOT_STARTED, story=story)
    told = Prediction(status="completed", data=dict(saga.data))
    done: list[StepCase] = []  # steps whose action succeeded, in order
    for step in saga.steps:
        if not runs(saga, step, family):
            told.story.append(f"{step.name}: skipped")
            continue
        outcome, tries, last = try_step(step, family)
        told.seconds += _cost(step, tries)
        told.story.append(f"{step.name}: {outcome} after {tries} tr{'y' if tries == 1 else 'ies'}")
        if outcome is Outcome.SUCCEEDED:
            told.effects[(step.name, "do")] += 1
            if last.reply:
                told.data.update(reply_of(saga, step))
            done.append(step)
            continue
        if step.kind is StepKind.RETRIABLE:
            told.status = "needs_attention"
            told.story.append(f"{step.name} is after the pivot: the saga needs attention")
            return told
        if step.kind is StepKind.PIVOT and outcome is Outcome.EXHAUSTED:
            told.status = "needs_attention"
            told.story.append(f"pivot {step.name}: its outcome is unknown, needs attention")
            return told
        return _turn_back(told, done, family)
    return told


def _turn_back(told: Prediction, done: list[StepCase], family: Family) -> Prediction:
    """Undo every compensatable step that ran, last first. (The failed step itself, if
    compensatable and not refused, gets a null compensation: nothing to write.)"""
    for step in reversed(done):
        if step.kind is not StepKind.COMPENSATABLE:
            continue
        undone, tries = try_undo(step, family)
        told.seconds += _cost(step, tries, undo=True)
        if not undone:
            told.status = "needs_attention"
            told.story.append(f"undo {step.name}: failed {tries} times, needs attention")
            return told
        told.effects[(step.name, "undo")] += 1
        told.story.append(f"undo {step.name}: done after {tries} tr{'y' if tries == 1 else 'ies'}")
    told.status = "compensated"
    return told


def _cost(step: StepCase, tries: int, *, undo: bool = False) -> float:
    plan = step.compensation if undo else step.action
    seconds = 0.0
    for attempt in range(1, tries + 1):
        behaviour = plan(attempt)
        seconds += step.timeout if behaviour.act is Act.SLEEP else 0.0
        seconds += step.backoff * 2 if behaviour.act in RETRYABLE else 0.0
    return seconds


__all__ = ["NOT_STARTED", "Effect", "Outcome", "Prediction", "predict", "runs", "try_step"]
