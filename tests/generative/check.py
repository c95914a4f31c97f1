"""The oracle: what the model predicts against what a run left behind.

For every saga: the status it ended in, the effects it left (each succeeded step not
undone has its ``do`` row once, each undone step its ``do`` and its ``undo`` row, a
refused or failed step none), its data, and a log that folds forward only. For the
run: no effect rows for sagas it did not start, each participant's running total
equal to its rows, nothing dead-lettered, and a runtime that stopped when asked.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sagakit.model.status import SagaStatus
from tests.generative.model import NOT_STARTED, Prediction, predict
from tests.generative.runners.base import Observation, Plant, Runner
from tests.generative.scenario import Scenario, render_saga

#: Added to the slowest saga's expected time: how long a run waits for every end.
WAIT_SLACK = 20.0


@dataclass(frozen=True, slots=True)
class Finding:
    """One disagreement between the model and a run (``saga_id`` None: the whole run)."""

    saga_id: str | None
    #: start, status, never ended, effects, data, log, rows, totals, dead letters, runtime
    what: str
    expected: str
    actual: str

    def __str__(self) -> str:
        where = self.saga_id or "run"
        return f"{where}: {self.what}: expected {self.expected}, got {self.actual}"


@dataclass(slots=True)
class Result:
    """A scenario run on one runtime, with what the model said and what disagreed."""

    scenario: Scenario
    runtime: str
    predictions: dict[str, Prediction]
    observation: Observation
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def report(self, *, limit: int = 6) -> str:
        """The findings, then each failing saga: its definition and plans, the model's
        story, and the calls its handlers got."""
        seen = self.observation
        lines = [
            f"runtime {self.runtime}, seed {self.scenario.seed}: "
            f"{len(self.findings)} finding(s) in {seen.seconds:.1f}s",
            *(f"  {finding}" for finding in self.findings),
        ]
        failing = sorted({f.saga_id for f in self.findings if f.saga_id is not None})
        for saga_id in failing[:limit]:
            saga = self.scenario.saga(saga_id)
            told = self.predictions[saga_id]
            lines.append("")
            lines.append(render_saga(saga, self.scenario.family))
            lines.append("  the model: " + "; ".join(told.story) + f" -> {told.status}")
            calls = [c for c in seen.calls if c[0] == saga_id]
            lines.append(
                "  calls: " + ", ".join(f"{step} {op} #{n} {how}" for _, step, op, n, how in calls)
            )
        if len(failing) > limit:
            lines.append(f"... and {len(failing) - limit} more saga(s)")
        return "\n".join(lines)


def predictions(scenario: Scenario) -> dict[str, Prediction]:
    return {saga.saga_id: predict(saga, scenario.family) for saga in scenario.sagas}


def wait_bound(predicted: dict[str, Prediction]) -> float:
    slowest = max((p.seconds for p in predicted.values()), default=0.0)
    return WAIT_SLACK + 2 * slowest


async def run_and_check(
    runner: Runner, scenario: Scenario, *, plant: Plant | None = None
) -> Result:
    """Run ``scenario`` on ``runner`` and compare it with the model."""
    if scenario.family is not runner.family:
        raise ValueError(f"{runner.name} runs {runner.family} scenarios, not {scenario.family}")
    predicted = predictions(scenario)
    seen = await runner.run(scenario, bound=wait_bound(predicted), plant=plant)
    result = Result(scenario, runner.name, predicted, seen)
    result.findings = compare(scenario, predicted, seen)
    return result


def compare(
    scenario: Scenario, predicted: dict[str, Prediction], seen: Observation
) -> list[Finding]:
    findings: list[Finding] = []
    for saga in scenario.sagas:
        findings.extend(_saga_findings(saga.saga_id, predicted[saga.saga_id], seen))
    started = {saga.saga_id for saga in scenario.sagas}
    strays = {key: n for key, n in seen.rows.items() if key[0] not in started}
    if strays:
        findings.append(Finding(None, "rows", "none for sagas not started", _counts(strays)))
    expected_totals = _totals(scenario, predicted)
    actual_totals = {p: n for p, n in seen.totals.items() if n or p in expected_totals}
    if actual_totals != expected_totals:
        findings.append(Finding(None, "totals", str(expected_totals), str(actual_totals)))
    if seen.dead_letters:
        findings.append(Finding(None, "dead letters", "none", "; ".join(seen.dead_letters[:5])))
    findings.extend(Finding(None, "runtime", "no trouble", problem) for problem in seen.problems)
    return findings


def _saga_findings(saga_id: str, told: Prediction, seen: Observation) -> list[Finding]:
    found = _start_findings(saga_id, told, seen)
    status = seen.statuses.get(saga_id, "missing")
    if told.status == NOT_STARTED:
        if status != "missing":
            found.append(Finding(saga_id, "status", "no saga", status))
    elif status == "missing" or not SagaStatus(status).terminal:
        found.append(Finding(saga_id, "never ended", told.status, status))
    elif status != told.status:
        found.append(Finding(saga_id, "status", told.status, status))
    rows = Counter({(step, op): n for (sid, step, op), n in seen.rows.items() if sid == saga_id})
    if rows != told.effects:
        found.append(Finding(saga_id, "effects", _effects(told.effects), _effects(rows)))
    data = seen.data.get(saga_id)
    if data is not None and data != told.data:
        found.append(Finding(saga_id, "data", _data(told.data, data), _data(data, told.data)))
    for violation in seen.bad_logs.get(saga_id, []):
        found.append(Finding(saga_id, "log", "a forward-only log", violation))
    return found


def _start_findings(saga_id: str, told: Prediction, seen: Observation) -> list[Finding]:
    """A start refused exactly when its data is not JSON, with an error naming the key."""
    refused = seen.refused.get(saga_id)
    if told.status != NOT_STARTED:
        return [] if refused is None else [Finding(saga_id, "start", "started", refused)]
    if refused is None:
        return [Finding(saga_id, "start", "refused: its data is not JSON", "started")]
    if "bad" not in refused:
        return [Finding(saga_id, "start", "an error naming the key 'bad'", refused)]
    return []


def _totals(scenario: Scenario, predicted: dict[str, Prediction]) -> dict[str, int]:
    totals: Counter[str] = Counter()
    for saga in scenario.sagas:
        for (step, op), n in predicted[saga.saga_id].effects.items():
            totals[saga.step(step).participant] += n if op == "do" else -n
    return {p: n for p, n in sorted(totals.items()) if n}


def _effects(effects: Counter[tuple[str, str]]) -> str:
    if not effects:
        return "no effects"
    return ", ".join(
        f"{step} {op}" + (f" x{n}" if n != 1 else "") for (step, op), n in sorted(effects.items())
    )


def _counts(rows: dict[tuple[str, str, str], int]) -> str:
    return ", ".join(f"{s} {step} {op} x{n}" for (s, step, op), n in sorted(rows.items())[:5])


def _data(mine: dict[str, Any], other: dict[str, Any]) -> str:
    """The part of ``mine`` that differs from ``other``."""
    differing = {k: v for k, v in mine.items() if other.get(k, object()) != v}
    return repr(differing) if differing else "{}"


__all__ = ["Finding", "Result", "compare", "predictions", "run_and_check", "wait_bound"]
