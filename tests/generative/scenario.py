"""What a generated run is made of: sagas, their steps, and how each participant behaves.

A :class:`Scenario` is plain data, generated from a seed (:func:`generate`), written to
and read from JSON (a shrunk failure can be replayed from its file), and rendered as
text for a person. Each saga has a definition of its own, so that one run holds many
shapes at once, and every step of every definition is the command ``act`` (and, for a
compensatable step, ``undo``) of one of a few shared participants: one batch of a
participant then mixes steps of many sagas and many behaviours.

What a participant does is planned per step and per attempt: attempt ``n`` of a step
follows the ``n``-th behaviour of its plan, and the last behaviour repeats for every
later attempt (a retry the plan did not expect, because a busy machine made a step
miss its timeout, behaves as the plan's end does).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import timedelta
from enum import StrEnum
from typing import Any, cast

from sagakit import RetryPolicy, SagaDefinition, Step, StepKind

PARTICIPANTS = ("p0", "p1", "p2", "p3")
#: A step with a "sleep" anywhere in its plans gets one of these timeouts (seconds);
#: every other step gets LONG_TIMEOUT, which no healthy run comes near.
SHORT_TIMEOUTS = (0.5, 0.75, 1.0)
LONG_TIMEOUT = 30.0
#: How often the transport delivers a choreographed event whose handling failed
#: (choreography retries by redelivery, not by the step's RetryPolicy).
CHOREOGRAPHY_DELIVERIES = 5


class Family(StrEnum):
    """Who drives the sagas: an orchestrator (with timers) or events (no coordinator)."""

    ORCHESTRATED = "orchestrated"
    CHOREOGRAPHED = "choreographed"


class Act(StrEnum):
    """What a handler does on one attempt."""

    OK = "ok"  # does its work and succeeds
    REFUSE = "refuse"  # raises StepRejected: a business refusal, final
    RAISE = "raise"  # raises an unexpected exception: a failed attempt, retried
    TRANSIENT = "transient"  # raises TransientError: a failed attempt, retried
    SLEEP = "sleep"  # runs far past its step's timeout
    POISON = "poison"  # returns a reply that is not a JSON value


class Style(StrEnum):
    """How a handler writes its effect (or writes before it fails)."""

    BEFORE = "before"  # it fails before touching the database (nothing written)
    WRITE = "write"  # through ctx.write (held, sent grouped with the batch's writes)
    CONNECTION = "connection"  # through ctx.connection: a conditional UPDATE, then a decision


#: Acts after which the attempt counts as failed and may be retried.
RETRYABLE = frozenset({Act.RAISE, Act.TRANSIENT, Act.SLEEP})
#: Values a reply may not carry: none of them is a JSON value that round-trips.
POISONS = ("object", "nan", "inf", "decimal", "datetime", "set", "bytes")


@dataclass(frozen=True, slots=True)
class Behaviour:
    """One attempt's behaviour, written ``act:style`` (``ok:write+reply``,
    ``poison:nan:connection``, ``refuse:before``)."""

    act: Act
    style: Style = Style.BEFORE
    reply: bool = False  # an OK that returns a reply dict (merged into the saga's data)
    poison: str | None = None  # for POISON: which value (one of POISONS)

    def __str__(self) -> str:
        middle = f"{self.poison}:" if self.poison else ""
        return f"{self.act}:{middle}{self.style}" + ("+reply" if self.reply else "")

    @classmethod
    def parse(cls, text: str) -> Behaviour:
        reply = text.endswith("+reply")
        parts = text.removesuffix("+reply").split(":")
        act = Act(parts[0])
        poison = parts[1] if act is Act.POISON else None
        return cls(act, Style(parts[-1]), reply, poison)

    @property
    def writes(self) -> bool:
        return self.style is not Style.BEFORE


@dataclass(frozen=True, slots=True)
class StepCase:
    """One step of a generated saga: where it sits, its policies, and its plans."""

    name: str
    participant: str
    kind: StepKind
    timeout: float
    #: The step's retry budget (RetryPolicy.attempts; None: until it succeeds).
    attempts: int | None
    backoff: float
    #: Behaviour of attempt 1, 2, ... of the action; the last repeats.
    actions: tuple[Behaviour, ...]
    #: For a compensatable step: behaviour of each compensation attempt; the last repeats.
    undo: tuple[Behaviour, ...] = ()
    undo_attempts: int = 8
    #: Runs only when a routing rule requires it (the saga's data says whether).
    optional: bool = False
    #: A routing rule may skip this (non-optional) step, when the saga's data says so.
    skippable: bool = False
    #: Its kind is given as text (``kind="pivot"``), which a Step accepts as well.
    kind_as_text: bool = False

    @property
    def sleeps(self) -> bool:
        return any(b.act is Act.SLEEP for b in (*self.actions, *self.undo))

    def action(self, attempt: int) -> Behaviour:
        return self.actions[min(attempt, len(self.actions)) - 1]

    def compensation(self, attempt: int) -> Behaviour:
        return self.undo[min(attempt, len(self.undo)) - 1]

    def to_step(self) -> Step:
        policy = RetryPolicy(
            attempts=self.attempts,
            backoff=timedelta(seconds=self.backoff),
            multiplier=1.5,
            cap=timedelta(seconds=max(self.backoff, 0.2)),
        )
        undo_policy = RetryPolicy(
            attempts=self.undo_attempts,
            backoff=timedelta(milliseconds=20),
            cap=timedelta(milliseconds=100),
        )
        return Step(
            name=self.name,
            participant=self.participant,
            command="act",
            compensation="undo" if self.kind is StepKind.COMPENSATABLE else None,
            kind=cast(StepKind, str(self.kind)) if self.kind_as_text else self.kind,
            timeout=timedelta(seconds=self.timeout),
            retry=policy,
            compensation_retry=undo_policy,
            optional=self.optional,
        )


@dataclass(frozen=True, slots=True)
class SagaCase:
    """One saga of a run: its own definition, and what its data tells the rules."""

    saga_id: str
    definition: str
    steps: tuple[StepCase, ...]
    #: Optional steps a rule requires for this saga, and skippable steps a rule skips.
    required: frozenset[str] = frozenset()
    skipped: frozenset[str] = frozenset()
    #: Its starting data also holds this value that is not JSON (one of POISONS), under
    #: the key "bad": starting it must be refused.
    start_poison: str | None = None

    def step(self, name: str) -> StepCase:
        return next(step for step in self.steps if step.name == name)

    def to_definition(self) -> SagaDefinition:
        return SagaDefinition(self.definition, steps=[step.to_step() for step in self.steps])

    @property
    def data(self) -> dict[str, Any]:
        """The saga's starting data: the flags its routing rules read."""
        flags: dict[str, Any] = {"case": self.saga_id}
        for step in self.steps:
            if step.optional:
                flags[f"run_{step.name}"] = step.name in self.required
            if step.skippable:
                flags[f"skip_{step.name}"] = step.name in self.skipped
        return flags

    def rules(self) -> str | None:
        """The routing rules of this saga's definition (TOML), or None if it needs none."""
        blocks = [f'saga = "{self.definition}"', "version = 1"]
        for step in self.steps:
            if step.optional:
                blocks.append(
                    _rule(f"require {step.name}", f"data.run_{step.name}", "require", step)
                )
            if step.skippable:
                blocks.append(_rule(f"skip {step.name}", f"data.skip_{step.name}", "skip", step))
        return "\n".join(blocks) + "\n" if len(blocks) > 2 else None


def reply_of(saga: SagaCase, step: StepCase) -> dict[str, str]:
    """What a step's success returns when its behaviour carries a reply (the same on
    every try, so a retry the plan did not expect changes nothing)."""
    return {f"{step.name}_reply": f"{saga.saga_id}/{step.name}"}


def _rule(name: str, when: str, verb: str, step: StepCase) -> str:
    return f'\n[[rule]]\nname = "{name}"\nwhen = "{when}"\n{verb} = ["{step.name}"]'


@dataclass(frozen=True, slots=True)
class Scenario:
    """A generated run: its seed, who drives it, and its sagas."""

    seed: int
    family: Family
    sagas: tuple[SagaCase, ...]
    #: How many rows of the shared counter each participant has (1: one hot row).
    slots: int = 1

    def keep(self, saga_ids: Iterable[str]) -> Scenario:
        wanted = set(saga_ids)
        return replace(self, sagas=tuple(s for s in self.sagas if s.saga_id in wanted))

    def saga(self, saga_id: str) -> SagaCase:
        return next(s for s in self.sagas if s.saga_id == saga_id)

    def to_json(self) -> str:
        return json.dumps(_plain(asdict(self)), indent=1)

    @classmethod
    def from_json(cls, text: str) -> Scenario:
        raw = json.loads(text)
        sagas = tuple(_saga_from(s) for s in raw["sagas"])
        return cls(raw["seed"], Family(raw["family"]), sagas, raw.get("slots", 1))

    def render(self) -> str:
        """The scenario as a person reads it: each definition and each step's plans."""
        lines = [f"seed {self.seed}, {self.family}, {len(self.sagas)} saga(s), slots {self.slots}"]
        for saga in self.sagas:
            lines.append(render_saga(saga, self.family))
        return "\n".join(lines)


def render_saga(saga: SagaCase, family: Family = Family.ORCHESTRATED) -> str:
    """One saga: a line per step (kind, participant, timeout, budget, plan), and its undo."""
    lines = [f"saga {saga.saga_id} ({saga.definition})"]
    if saga.start_poison:
        lines[0] += f", started with data that is not JSON: bad = {saga.start_poison}"
    choreographed = family is Family.CHOREOGRAPHED
    for step in saga.steps:
        budget = "forever" if step.attempts is None else _tries(step.attempts)
        timing = f"timeout {step.timeout:g}s, {budget}"
        if choreographed:
            timing = f"up to {CHOREOGRAPHY_DELIVERIES} deliveries"
        flags = []
        if step.optional:
            flags.append(
                "optional, " + ("required" if step.name in saga.required else "not required")
            )
        if step.skippable:
            flags.append("skipped by a rule" if step.name in saga.skipped else "skippable")
        extra = f" ({'; '.join(flags)})" if flags else ""
        kind = f'kind="{step.kind}"' if step.kind_as_text else step.kind
        lines.append(
            f"  {step.name} [{kind}] at {step.participant}, {timing}{extra}: "
            + ", ".join(str(b) for b in step.actions)
        )
        if step.undo:
            undo_budget = "" if choreographed else f", {_tries(step.undo_attempts)}"
            lines.append(f"      undo{undo_budget}: " + ", ".join(str(b) for b in step.undo))
    return "\n".join(lines)


def _tries(count: int) -> str:
    return f"{count} {'try' if count == 1 else 'tries'}"


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, frozenset | set):
        return sorted(value)
    return value


def _saga_from(raw: Mapping[str, Any]) -> SagaCase:
    steps = tuple(
        StepCase(
            name=s["name"],
            participant=s["participant"],
            kind=StepKind(s["kind"]),
            timeout=s["timeout"],
            attempts=s["attempts"],
            backoff=s["backoff"],
            actions=tuple(_behaviour_from(b) for b in s["actions"]),
            undo=tuple(_behaviour_from(b) for b in s["undo"]),
            undo_attempts=s["undo_attempts"],
            optional=s["optional"],
            skippable=s["skippable"],
            kind_as_text=s.get("kind_as_text", False),
        )
        for s in raw["steps"]
    )
    return SagaCase(
        raw["saga_id"],
        raw["definition"],
        steps,
        frozenset(raw["required"]),
        frozenset(raw["skipped"]),
        raw.get("start_poison"),
    )


def _behaviour_from(raw: Mapping[str, Any]) -> Behaviour:
    return Behaviour(Act(raw["act"]), Style(raw["style"]), raw["reply"], raw["poison"])


# ---------------------------------------------------------------------------- generating


#: The styles each act comes in: an OK writes its effect one way or the other.
_STYLES: dict[Act, tuple[Style, ...]] = {
    act: (Style.WRITE, Style.CONNECTION) if act is Act.OK else tuple(Style) for act in Act
}


@dataclass(slots=True)
class Knobs:
    """What the generator may use. ``left_out`` names behaviours never generated: an act
    (``sleep``), an act in one style (``raise:connection``), ``start:poison`` (data
    that is not JSON given to start) or ``kind:text`` (a step's kind given as text), to
    look past a known defect or to keep a planted-bug test to what the engine got right
    already."""

    sagas: int = 24
    max_steps: int = 8
    left_out: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        known = {str(act) for act in Act} | {f"{a}:{s}" for a in Act for s in _STYLES[a]}
        known |= {"start:poison", "kind:text"}  # data that is not JSON; kind="pivot"
        unknown = sorted(self.left_out - known)
        if unknown:
            raise ValueError(f"unknown behaviours {unknown}; e.g. sleep, raise:connection")
        if not self.styles(Act.OK):
            raise ValueError("every scenario needs ok in at least one style")

    @classmethod
    def without(cls, *left_out: str, sagas: int = 24) -> Knobs:
        return cls(sagas=sagas, left_out=frozenset(left_out))

    def styles(self, act: Act) -> tuple[Style, ...]:
        if str(act) in self.left_out:
            return ()
        return tuple(s for s in _STYLES[act] if f"{act}:{s}" not in self.left_out)

    @property
    def acts(self) -> frozenset[Act]:
        return frozenset(act for act in Act if self.styles(act))


def generate(seed: int, family: Family, knobs: Knobs | None = None) -> Scenario:
    """The scenario of ``seed``: the same seed always gives the same scenario."""
    knobs = knobs or Knobs()
    rng = random.Random(f"{family}:{seed}")  # a seed that replays
    sagas = tuple(
        _saga(rng, family, knobs, f"s{seed}-{index:02d}", f"g{index:02d}")
        for index in range(knobs.sagas)
    )
    scenario = Scenario(seed, family, sagas, slots=rng.choice((1, 1, 2, 4)))
    # Drawn apart, so that they change nothing else a seed generates.
    if "kind:text" not in knobs.left_out:
        texts = random.Random(f"{family}:{seed}:text")
        sagas = tuple(replace(saga, steps=_kinds_as_text(saga.steps, texts)) for saga in sagas)
    if "start:poison" not in knobs.left_out:
        starts = random.Random(f"{family}:{seed}:start")
        sagas = tuple(
            replace(saga, start_poison=starts.choice(POISONS)) if starts.random() < 0.04 else saga
            for saga in sagas
        )
    return replace(scenario, sagas=sagas)


def _kinds_as_text(steps: tuple[StepCase, ...], rng: random.Random) -> tuple[StepCase, ...]:
    return tuple(replace(step, kind_as_text=rng.random() < 0.2) for step in steps)


def _saga(rng: random.Random, family: Family, knobs: Knobs, saga_id: str, name: str) -> SagaCase:
    count = rng.randint(1, knobs.max_steps)
    compensatable = rng.randint(0, count)
    pivot = 1 if compensatable < count and rng.random() < 0.6 else 0
    kinds = (
        [StepKind.COMPENSATABLE] * compensatable
        + [StepKind.PIVOT] * pivot
        + [StepKind.RETRIABLE] * (count - compensatable - pivot)
    )
    steps = tuple(_step(rng, family, knobs, f"s{i + 1}", kind) for i, kind in enumerate(kinds))
    required = frozenset(s.name for s in steps if s.optional and rng.random() < 0.5)
    skipped = frozenset(s.name for s in steps if s.skippable and rng.random() < 0.5)
    return SagaCase(saga_id, name, steps, required, skipped)


def _step(rng: random.Random, family: Family, knobs: Knobs, name: str, kind: StepKind) -> StepCase:
    sleeps = family is Family.ORCHESTRATED and Act.SLEEP in knobs.acts and rng.random() < 0.25
    actions, ends_retryable = _plan(rng, family, knobs, sleeps)
    undo: tuple[Behaviour, ...] = ()
    undo_attempts = 8
    if kind is StepKind.COMPENSATABLE:
        undo, undo_attempts = _undo_plan(rng, family, knobs, sleeps)
    attempts = _budget(rng, kind, len(actions), ends_retryable, sleeps)
    optional = family is Family.ORCHESTRATED and kind is not StepKind.PIVOT and rng.random() < 0.12
    skippable = (
        family is Family.ORCHESTRATED
        and not optional
        and kind is not StepKind.PIVOT
        and rng.random() < 0.08
    )
    plans = (*actions, *undo)
    return StepCase(
        name=name,
        participant=rng.choice(PARTICIPANTS),
        kind=kind,
        timeout=rng.choice(SHORT_TIMEOUTS)
        if any(b.act is Act.SLEEP for b in plans)
        else LONG_TIMEOUT,
        attempts=attempts,
        backoff=rng.choice((0.02, 0.05, 0.1)),
        actions=actions,
        undo=undo,
        undo_attempts=undo_attempts,
        optional=optional,
        skippable=skippable,
    )


def _pick(
    rng: random.Random, weighted: Sequence[tuple[Act, int]], allowed: frozenset[Act]
) -> Act | None:
    choices = [(act, weight) for act, weight in weighted if act in allowed]
    if not choices:
        return None
    acts = [act for act, _ in choices]
    return rng.choices(acts, [weight for _, weight in choices])[0]


def _some(
    rng: random.Random, count: int, weighted: Sequence[tuple[Act, int]], knobs: Knobs
) -> list[Behaviour]:
    picked = (_pick(rng, weighted, knobs.acts) for _ in range(count))
    return [_behaviour(rng, knobs, act) for act in picked if act is not None]


def _plan(
    rng: random.Random, family: Family, knobs: Knobs, sleeps: bool
) -> tuple[tuple[Behaviour, ...], bool]:
    """An action's plan: some retryable failures, then an end (or more failures, so the
    budget runs out). Returns the plan and whether it ends in a retryable failure."""
    failing = [(Act.RAISE, 3), (Act.TRANSIENT, 2)] + ([(Act.SLEEP, 4)] if sleeps else [])
    prefix = _some(rng, rng.choice((0, 0, 1, 2)), failing, knobs)
    ends = [(Act.OK, 40), (Act.REFUSE, 3), (Act.POISON, 2)]
    if family is Family.ORCHESTRATED:
        # Runs out of tries (choreographed, it would be redelivered until dead-lettered).
        ends += [(Act.RAISE, 1), (Act.TRANSIENT, 1)] + ([(Act.SLEEP, 2)] if sleeps else [])
    end = _some(rng, 1, ends, knobs)[0]
    if sleeps and not any(b.act is Act.SLEEP for b in prefix) and end.act is not Act.SLEEP:
        prefix.insert(0, _behaviour(rng, knobs, Act.SLEEP))
    return (*prefix, end), end.act in RETRYABLE


def _undo_plan(
    rng: random.Random, family: Family, knobs: Knobs, sleeps: bool
) -> tuple[tuple[Behaviour, ...], int]:
    """A compensation's plan: some failures, then success; and its retry budget."""
    failing = [(Act.RAISE, 2), (Act.TRANSIENT, 2), (Act.REFUSE, 1)]
    failing += [(Act.SLEEP, 2)] if sleeps else []
    plan = _some(rng, rng.choice((0, 0, 0, 1, 2)), failing, knobs)
    failures = len(plan)
    plan.append(_behaviour(rng, knobs, Act.OK))
    if family is Family.CHOREOGRAPHED:
        return tuple(plan), 8  # retried by redelivery; the budget is the transport's
    if failures and rng.random() < 0.15:
        return tuple(plan), rng.randint(1, failures)  # runs out: the saga needs attention
    # One spare try when the step may time out: a busy machine may cost one.
    return tuple(plan), failures + (3 if sleeps else 1)


def _budget(
    rng: random.Random, kind: StepKind, length: int, ends_retryable: bool, sleeps: bool
) -> int | None:
    """The step's retry budget for a plan of ``length`` behaviours."""
    if ends_retryable:
        return rng.randint(1, length + 1)  # runs out however many tries it has
    if length > 1 and rng.random() < 0.1:
        return rng.randint(1, length - 1)  # runs out before the plan's end
    if sleeps:
        # A short timeout that a busy machine may also hit on a good attempt: spare
        # tries (or none needed) keep the outcome the plan's end.
        return rng.choice((None, length + 2))
    if kind is StepKind.RETRIABLE and rng.random() < 0.3:
        return None
    return length  # the plan's end is the last try allowed


def _behaviour(rng: random.Random, knobs: Knobs, act: Act) -> Behaviour:
    style = rng.choice(knobs.styles(act))
    if act is Act.OK:
        return Behaviour(act, style, reply=rng.random() < 0.3)
    if act is Act.POISON:
        return Behaviour(act, style, poison=rng.choice(POISONS))
    return Behaviour(act, style)


__all__ = [
    "CHOREOGRAPHY_DELIVERIES",
    "PARTICIPANTS",
    "POISONS",
    "RETRYABLE",
    "Act",
    "Behaviour",
    "Family",
    "Knobs",
    "SagaCase",
    "Scenario",
    "StepCase",
    "Style",
    "generate",
    "render_saga",
    "reply_of",
]
