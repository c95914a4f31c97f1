"""Routing rules: which steps a saga runs, decided at run time by CEL expressions.

A rule file names the saga it routes, carries a version, and lists rules; each rule has
a CEL condition over the saga's data and the steps it ``skip``s or ``require``s
(an optional step runs only when some rule requires it)::

    saga = "order"
    version = 2

    [[rule]]
    name = "VIPs skip the fraud check"
    when = "data.vip"
    skip = ["fraud_check"]

    [[rule]]
    name = "large orders wait for a person"
    when = "data.amount_cents > 100000"
    require = ["manual_approval"]

    [[sample]]
    name = "a VIP's small order"
    data = { vip = true, amount_cents = 2500 }

Rule sets are published to the store with increasing versions. A saga is pinned to
the version that was current when it started, so publishing new rules never changes
a saga already running. When a step is reached, the rules that name it are evaluated
against the saga's data as it is then: a ``require`` that holds wins over a ``skip``.
A condition's cost is bounded when the file is read and each evaluation has a time
budget, spent in a worker process (:mod:`sagakit.engine.rule_budget`). A rule that cannot be
evaluated for a saga (a missing field, a type error, over its budget) takes its
``on_error`` fallback: ``run`` (the default: the step runs, the careful side for a skip
and a require alike), ``skip``, or ``attention`` (the saga needs a person); never the
process down. Invalid files are refused when loaded, with the line and the reason.
"""

from __future__ import annotations

import asyncio
import re
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sagakit.engine import rule_budget
from sagakit.errors import SagaError
from sagakit.model.definition import SagaDefinition, Step, StepKind
from sagakit.model.routing import RuleFailed, Verdict
from sagakit.observe.logs import get_logger
from sagakit.ports import RuleRecords, UnitOfWork

log = get_logger("sagakit.rules")


_RULE_HEADER = re.compile(r"^\s*\[\[\s*rule\s*\]\]")
_SAMPLE_HEADER = re.compile(r"^\s*\[\[\s*sample\s*\]\]")
_TOP_KEYS = {"saga", "version", "rule", "sample"}
_RULE_KEYS = {"name", "when", "skip", "require", "on_error"}
OnError = Literal["run", "skip", "attention"]
ON_ERROR: tuple[OnError, ...] = ("run", "skip", "attention")


class RuleError(SagaError):
    """A rule file is invalid; ``line`` points at the problem."""

    def __init__(self, source: str, line: int, reason: str) -> None:
        super().__init__(f"{source}:{line}: {reason}")
        self.source = source
        self.line = line
        self.reason = reason


@dataclass(frozen=True)
class Rule:
    name: str
    when: str
    skip: tuple[str, ...]
    require: tuple[str, ...]
    line: int
    on_error: OnError = "run"

    def holds(self, data: Mapping[str, Any], saga: Mapping[str, Any]) -> bool:
        """Whether the condition holds; RuleFailed when it cannot be evaluated."""
        try:
            rule_budget.check_data(dict(data))
        except rule_budget.OverBudget as exc:
            raise RuleFailed(self.name, str(exc)) from exc
        evaluated, answer = rule_budget.WORKER.evaluate(self.when, data, saga)
        if not evaluated:
            raise RuleFailed(self.name, answer)
        return answer == "true"

    def fallback(self, step: Step, failure: RuleFailed) -> tuple[Verdict, str]:
        """What ``step`` does when this rule failed: its ``on_error``; raises for
        ``attention``."""
        if self.on_error == "attention":
            raise failure
        log.warning(f"{failure}; step {step.name} takes on_error = {self.on_error}")
        return self.on_error, f"{failure}; on_error = {self.on_error}"


@dataclass(frozen=True)
class Sample:
    name: str
    data: dict[str, Any]


@dataclass(frozen=True)
class RuleSet:
    """A versioned set of routing rules for one saga definition."""

    saga: str
    version: int
    rules: tuple[Rule, ...]
    samples: tuple[Sample, ...] = ()
    source: str = ""
    #: Why a stored rule set could not be read (over limits set since it was published):
    #: every verdict under it fails, so its sagas need attention instead of guessing.
    broken: str | None = None

    def verdict(
        self, step: Step, data: Mapping[str, Any], saga: Mapping[str, Any] | None = None
    ) -> tuple[Verdict, str]:
        """Whether ``step`` runs for this data, and which rule (or default) said so."""
        if self.broken is not None:
            raise RuleFailed(f"{self.saga} rules v{self.version}", self.broken)
        context = saga or {}
        required = [r for r in self.rules if step.name in r.require]
        for rule in required:
            try:
                if rule.holds(data, context):
                    return "run", rule.name
            except RuleFailed as failed:
                return rule.fallback(step, failed)
        for rule in (r for r in self.rules if step.name in r.skip):
            try:
                if rule.holds(data, context):
                    return "skip", rule.name
            except RuleFailed as failed:
                return rule.fallback(step, failed)
        if step.optional:
            return "skip", "optional, and no rule requires it"
        return "run", "default"

    def plan(
        self, definition: SagaDefinition, data: Mapping[str, Any]
    ) -> list[tuple[str, str, str]]:
        """A dry run: ``(step, verdict, because)`` for every step, against ``data``."""
        out: list[tuple[str, str, str]] = []
        for step in definition.steps:
            try:
                verdict, why = self.verdict(step, data)
            except RuleFailed as exc:
                out.append((step.name, "error", str(exc)))
                continue
            out.append((step.name, verdict, why))
        return out

    @classmethod
    def parse(
        cls,
        text: str,
        *,
        source: str = "<rules>",
        definition: SagaDefinition | None = None,
    ) -> RuleSet:
        """Read and check a rule file; raise RuleError naming the line and the reason."""
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            match = re.search(r"line (\d+)", str(exc))
            raise RuleError(source, int(match.group(1)) if match else 1, str(exc)) from exc
        lines = text.splitlines()
        rule_lines = [n for n, line in enumerate(lines, 1) if _RULE_HEADER.match(line)]
        sample_lines = [n for n, line in enumerate(lines, 1) if _SAMPLE_HEADER.match(line)]
        unknown = set(doc) - _TOP_KEYS
        if unknown:
            key = sorted(unknown)[0]
            raise RuleError(source, _line_of(lines, key), f"unknown setting {key!r}")
        saga = doc.get("saga")
        if not isinstance(saga, str) or not saga:
            raise RuleError(source, _line_of(lines, "saga"), 'say which saga: saga = "name"')
        if definition is not None and definition.name != saga:
            raise RuleError(
                source,
                _line_of(lines, "saga"),
                f"these rules are for saga {saga!r}, not {definition.name!r}",
            )
        version = doc.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise RuleError(
                source, _line_of(lines, "version"), "version must be a whole number >= 1"
            )
        raw_rules = doc.get("rule", [])
        if not isinstance(raw_rules, list):
            raise RuleError(source, _line_of(lines, "rule"), "rules are written as [[rule]] tables")
        rules = tuple(
            _rule(raw, source, lines, rule_lines[i] if i < len(rule_lines) else 1, definition)
            for i, raw in enumerate(raw_rules)
        )
        seen: set[str] = set()
        for rule in rules:
            if rule.name in seen:
                raise RuleError(source, rule.line, f"two rules are named {rule.name!r}")
            seen.add(rule.name)
        samples = tuple(
            _sample(raw, source, sample_lines[i] if i < len(sample_lines) else 1)
            for i, raw in enumerate(doc.get("sample", []))
        )
        return cls(saga, version, rules, samples, text)


def _line_of(lines: Sequence[str], key: str, start: int = 1) -> int:
    pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
    for number in range(start, len(lines) + 1):
        if pattern.match(lines[number - 1]):
            return number
    return start


def _rule(
    raw: Any,
    source: str,
    lines: Sequence[str],
    header: int,
    definition: SagaDefinition | None,
) -> Rule:
    import celpy

    if not isinstance(raw, dict):
        raise RuleError(source, header, "a rule is a table of name, when, skip and require")
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise RuleError(source, _line_of(lines, key, header), f"unknown rule setting {key!r}")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise RuleError(source, header, "every rule needs a name")
    when = raw.get("when")
    when_line = _line_of(lines, "when", header)
    if not isinstance(when, str) or not when.strip():
        raise RuleError(source, when_line, f'rule {name!r} needs a condition: when = "..."')
    steps: dict[str, tuple[str, ...]] = {}
    for key in ("skip", "require"):
        value = raw.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise RuleError(source, _line_of(lines, key, header), f"{key} is a list of step names")
        steps[key] = tuple(value)
    if not steps["skip"] and not steps["require"]:
        raise RuleError(source, header, f"rule {name!r} neither skips nor requires a step")
    if definition is not None:
        _check_steps(name, steps, definition=definition, source=source, lines=lines, header=header)
    on_error = raw.get("on_error", "run")
    if on_error not in ON_ERROR:
        raise RuleError(
            source, _line_of(lines, "on_error", header), f"on_error is one of {', '.join(ON_ERROR)}"
        )
    try:
        rule_budget.check_text(when)
    except rule_budget.OverBudget as exc:
        raise RuleError(source, when_line, f"rule {name!r}: {exc}") from exc
    env = celpy.Environment()
    try:
        tree = env.compile(when)
    except Exception as exc:  # celpy's parse errors carry the column in their text
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RuleError(
            source, when_line, f"rule {name!r}: the condition does not parse: {detail}"
        ) from exc
    try:
        rule_budget.check_tree(tree)
    except rule_budget.OverBudget as exc:
        raise RuleError(source, when_line, f"rule {name!r}: {exc}") from exc
    return Rule(name, when, steps["skip"], steps["require"], header, on_error)


def _check_steps(
    name: str,
    steps: dict[str, tuple[str, ...]],
    *,
    definition: SagaDefinition,
    source: str,
    lines: Sequence[str],
    header: int,
) -> None:
    known = {step.name: step for step in definition.steps}
    for key, names in steps.items():
        line = _line_of(lines, key, header)
        for step_name in names:
            step = known.get(step_name)
            if step is None:
                raise RuleError(
                    source,
                    line,
                    f"rule {name!r}: saga {definition.name!r} has no step {step_name!r}",
                )
            if key == "skip" and step.kind is StepKind.PIVOT:
                raise RuleError(
                    source, line, f"rule {name!r}: the pivot {step_name!r} cannot be skipped"
                )
            if key == "require" and not step.optional:
                raise RuleError(
                    source,
                    line,
                    f"rule {name!r}: {step_name!r} always runs; require is for optional steps",
                )


def _sample(raw: Any, source: str, header: int) -> Sample:
    if (
        not isinstance(raw, dict)
        or not isinstance(raw.get("name"), str)
        or not isinstance(raw.get("data"), dict)
    ):
        raise RuleError(source, header, "a sample is a table with a name and a data table")
    return Sample(raw["name"], dict(raw["data"]))


# ---------------------------------------------------------------------------- the book


class RuleBook:
    """Published rule sets in a store: the latest is pinned to each saga as it starts."""

    def __init__(self, *, refresh: float = 1.0) -> None:
        self.refresh = refresh
        self._sets: dict[tuple[str, int], RuleSet] = {}
        self._latest: dict[str, tuple[float, int | None]] = {}

    async def latest(self, records: RuleRecords, saga: str) -> int | None:
        """The newest published version for ``saga`` (looked up at most every ``refresh``
        seconds)."""
        seen = self._latest.get(saga)
        now = time.monotonic()
        if seen is not None and now - seen[0] < self.refresh:
            return seen[1]
        self._latest[saga] = (now, await records.newest(saga))
        return self._latest[saga][1]

    async def get(self, records: RuleRecords, saga: str, version: int) -> RuleSet:
        found = self._sets.get((saga, version))
        if found is None:
            source = await records.source(saga, version)
            if source is None:
                raise RuleFailed(f"{saga} v{version}", "that rule set is not in the store")
            try:
                found = RuleSet.parse(source, source=f"{saga} rules v{version}")
            except RuleError as exc:
                found = RuleSet(saga, version, (), source=source, broken=exc.reason)
            self._sets[(saga, version)] = found  # published sets never change
            await asyncio.to_thread(rule_budget.WORKER.start)  # its start off the loop
        return found


async def publish(unit: UnitOfWork, rules: RuleSet) -> None:
    """Add a rule set to ``unit``'s store; its version must be newer than any published."""
    newest = await unit.records.rules.newest(rules.saga)
    if newest is not None and rules.version <= newest:
        raise RuleError(
            f"{rules.saga} rules",
            1,
            f"version {rules.version} is not newer than the published {newest}",
        )
    await unit.records.rules.add(rules.saga, rules.version, rules.source, at=time.time())


__all__ = [
    "OnError",
    "Rule",
    "RuleBook",
    "RuleError",
    "RuleFailed",
    "RuleSet",
    "Sample",
    "Verdict",
    "publish",
]
