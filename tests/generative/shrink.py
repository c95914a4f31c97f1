"""Shrinking a failing scenario: fewer sagas, fewer steps, shorter plans, same failure.

Each candidate is run again on the same runtime; it is kept when it still fails in
one of the ways the original did (a finding of the same kind: status, effects, ...).
Runs are real, so a candidate that fails only sometimes may be dropped: the result is
a smaller reproduction, not always the smallest.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from typing import TypeVar

from tests.generative.check import Result, run_and_check
from tests.generative.runners.base import Runner
from tests.generative.scenario import SagaCase, Scenario, StepCase

T = TypeVar("T")


async def shrink(
    runner: Runner, failed: Result, *, seconds: float, say: Callable[[str], None] = print
) -> Result:
    """The smallest failing scenario found within ``seconds``, and its run."""
    kinds = {finding.what for finding in failed.findings} - {"totals"}
    deadline = time.monotonic() + seconds
    best = failed
    tries = 0

    async def still_fails(candidate: Scenario) -> bool:
        nonlocal best, tries
        if time.monotonic() > deadline or not candidate.sagas:
            return False
        tries += 1
        result = await run_and_check(runner, candidate)
        if result.ok or not kinds & {finding.what for finding in result.findings}:
            return False
        best = result
        say(f"  shrunk to {_size(candidate)}")
        return True

    failing = [f.saga_id for f in failed.findings if f.saga_id is not None]
    if failing and len(set(failing)) < len(failed.scenario.sagas):
        await still_fails(failed.scenario.keep(failing))
    await _fewer_sagas(best, still_fails)
    changed = True
    while changed and time.monotonic() < deadline:
        changed = False
        for candidate in _simpler(best.scenario):
            if await still_fails(candidate):
                changed = True
                break
    say(f"  shrinking took {tries} run(s)")
    return best


async def _fewer_sagas(start: Result, still_fails: Callable[[Scenario], Awaitable[bool]]) -> None:
    """Drop chunks of sagas, halving the chunk until single sagas (ddmin, roughly)."""
    scenario = start.scenario
    chunk = max(len(scenario.sagas) // 2, 1)
    while chunk >= 1 and len(scenario.sagas) > 1:
        removed = False
        ids = [saga.saga_id for saga in scenario.sagas]
        for first in range(0, len(ids), chunk):
            rest = ids[:first] + ids[first + chunk :]
            candidate = scenario.keep(rest)
            if rest and await still_fails(candidate):
                scenario = candidate
                removed = True
                break
        if not removed:
            chunk //= 2


def _simpler(scenario: Scenario) -> Iterator[Scenario]:
    """Scenarios one small simplification away: a step fewer, a shorter plan."""
    if scenario.slots != 1:
        yield replace(scenario, slots=1)
    for sagas in _each_simpler(scenario.sagas, _simpler_saga):
        yield replace(scenario, sagas=sagas)


def _simpler_saga(saga: SagaCase) -> Iterator[SagaCase]:
    if len(saga.steps) > 1:
        for index in range(len(saga.steps)):
            yield replace(saga, steps=saga.steps[:index] + saga.steps[index + 1 :])
    for steps in _each_simpler(saga.steps, _simpler_step):
        yield replace(saga, steps=steps)


def _simpler_step(step: StepCase) -> Iterator[StepCase]:
    if len(step.actions) > 1:
        attempts = None if step.attempts is None else max(step.attempts - 1, 1)
        yield replace(step, actions=step.actions[1:], attempts=attempts)
    if len(step.undo) > 1:
        yield replace(step, undo=step.undo[1:], undo_attempts=max(step.undo_attempts - 1, 1))


def _each_simpler(
    items: tuple[T, ...], simpler: Callable[[T], Iterator[T]]
) -> Iterator[tuple[T, ...]]:
    """``items`` with one of them replaced by each of its simpler versions in turn."""
    for index, item in enumerate(items):
        for smaller in simpler(item):
            yield (*items[:index], smaller, *items[index + 1 :])


def _size(scenario: Scenario) -> str:
    steps = sum(len(saga.steps) for saga in scenario.sagas)
    return f"{len(scenario.sagas)} saga(s), {steps} step(s)"


__all__ = ["shrink"]
