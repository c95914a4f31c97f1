"""Saga definitions: named, versioned lists of steps, checked when they are defined."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Literal

from sagakit.errors import DefinitionError

if TYPE_CHECKING:
    from pydantic import BaseModel


class StepKind(StrEnum):
    """Where a step sits relative to the saga's go/no-go point."""

    COMPENSATABLE = "compensatable"
    PIVOT = "pivot"
    RETRIABLE = "retriable"
    #: Waits for a person to approve or reject; nothing to undo. Comes before the pivot.
    APPROVAL = "approval"


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How often and how patiently a step (or its compensation) is tried.

    ``attempts`` counts every try, the first included; ``None`` means until it succeeds.
    """

    attempts: int | None = 3
    backoff: timedelta = timedelta(milliseconds=200)
    multiplier: float = 2.0
    cap: timedelta = timedelta(seconds=30)

    def __post_init__(self) -> None:
        for name in ("backoff", "cap"):
            if not isinstance(getattr(self, name), timedelta):
                raise DefinitionError(
                    f"retry {name} must be a timedelta, not {type(getattr(self, name)).__name__}"
                )
        if self.attempts is not None and self.attempts < 1:
            raise DefinitionError(f"retry attempts must be at least 1, got {self.attempts}")
        if self.backoff < timedelta(0) or self.cap < self.backoff:
            raise DefinitionError("retry backoff must be >= 0 and no larger than its cap")
        if self.multiplier < 1:
            raise DefinitionError(f"retry multiplier must be >= 1, got {self.multiplier}")

    def allows_another(self, attempts_made: int) -> bool:
        return self.attempts is None or attempts_made < self.attempts

    def delay(self, attempts_made: int) -> timedelta:
        """The wait before the next try, after ``attempts_made`` tries have failed."""
        seconds = self.backoff.total_seconds() * self.multiplier ** max(attempts_made - 1, 0)
        return min(timedelta(seconds=seconds), self.cap)


NO_RETRY = RetryPolicy(attempts=1)
FOREVER = RetryPolicy(attempts=None, backoff=timedelta(milliseconds=200), cap=timedelta(seconds=30))


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One local transaction of the saga, run by ``participant`` on receiving ``command``.

    ``retry`` defaults by kind: compensatable and pivot steps get three tries, retriable
    steps are tried until they succeed. ``compensation_retry`` bounds how long a failing
    compensation is retried before the saga needs attention.
    """

    name: str
    participant: str
    command: str
    compensation: str | None = None
    kind: StepKind = StepKind.COMPENSATABLE
    timeout: timedelta = timedelta(seconds=30)
    retry: RetryPolicy | None = None
    compensation_retry: RetryPolicy = field(
        default_factory=lambda: RetryPolicy(attempts=8, cap=timedelta(seconds=10))
    )
    #: Runs only when a routing rule requires it (otherwise skipped).
    optional: bool = False
    #: For an approval: what an unanswered request becomes when its timeout passes.
    on_timeout: Literal["reject", "approve", "needs_attention"] = "reject"
    #: The step's contract (see sagakit.model.contracts): the fields of the saga's data its
    #: command reads, and what its reply adds. None: not checked.
    command_model: type[BaseModel] | None = field(default=None, compare=False)
    reply_model: type[BaseModel] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        where = f"step {self.name!r}"
        if not isinstance(self.kind, StepKind):
            kinds = ", ".join(repr(k.value) for k in StepKind)
            if not isinstance(self.kind, str) or self.kind not in {k.value for k in StepKind}:
                raise DefinitionError(f"{where}: kind {self.kind!r} is none of {kinds}")
            object.__setattr__(self, "kind", StepKind(self.kind))
        if not isinstance(self.timeout, timedelta):
            raise DefinitionError(
                f"{where}: timeout must be a timedelta (e.g. timedelta(seconds=5)), "
                f"not {type(self.timeout).__name__} {self.timeout!r}"
            )
        for name in ("retry", "compensation_retry"):
            policy = getattr(self, name)
            if policy is not None and not isinstance(policy, RetryPolicy):
                raise DefinitionError(
                    f"{where}: {name} must be a RetryPolicy, not {type(policy).__name__}"
                )
        if self.on_timeout not in ("reject", "approve", "needs_attention"):
            raise DefinitionError(
                f"{where}: on_timeout {self.on_timeout!r} is none of "
                "'reject', 'approve', 'needs_attention'"
            )

    @property
    def policy(self) -> RetryPolicy:
        if self.retry is not None:
            return self.retry
        return FOREVER if self.kind is StepKind.RETRIABLE else RetryPolicy()


@dataclass(frozen=True, slots=True)
class Parallel:
    """Steps that run concurrently and are compensated together as one group."""

    steps: tuple[Step, ...]


def approval(
    name: str,
    *,
    timeout: timedelta = timedelta(hours=24),
    on_timeout: Literal["reject", "approve", "needs_attention"] = "reject",
    optional: bool = False,
) -> Step:
    """A step that waits for a person to approve or reject the saga (``sagakit approve``).

    Rejecting, or no answer within ``timeout`` when ``on_timeout`` is ``reject``,
    compensates what came before; ``approve`` lets it through; ``needs_attention``
    hands it to an operator.
    """
    return Step(
        name=name,
        participant="person",
        command="approve",
        kind=StepKind.APPROVAL,
        timeout=timeout,
        optional=optional,
        on_timeout=on_timeout,
    )


def parallel(*steps: Step) -> Parallel:
    """Group steps so they run concurrently: ``parallel(reserve_stock, hold_seat)``."""
    return Parallel(tuple(steps))


@dataclass(frozen=True, slots=True)
class SagaDefinition:
    """A named, versioned saga: stages of one step or one parallel group, run in order.

    Compensatable steps come first, then at most one pivot, then retriable steps.
    Every rule is checked here, so an invalid saga never reaches a store.
    """

    name: str
    version: int
    stages: tuple[tuple[Step, ...], ...]
    # Looked up for every reply a saga gets: worked out once, not on every look.
    _steps: tuple[Step, ...] = field(init=False, repr=False, compare=False)
    _places: dict[str, tuple[Step, int]] = field(init=False, repr=False, compare=False)

    def __init__(self, name: str, *, version: int = 1, steps: Iterable[Step | Parallel]) -> None:
        stages = tuple((s,) if isinstance(s, Step) else s.steps for s in steps)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "version", version)
        object.__setattr__(self, "stages", stages)
        flat = tuple(step for stage in stages for step in stage)
        object.__setattr__(self, "_steps", flat)
        places: dict[str, tuple[Step, int]] = {}
        for index, stage in enumerate(stages):
            for step in stage:
                places.setdefault(step.name, (step, index))
        object.__setattr__(self, "_places", places)
        _validate(self)

    @property
    def steps(self) -> tuple[Step, ...]:
        return self._steps

    def has_step(self, name: str) -> bool:
        return name in self._places

    def step(self, name: str) -> Step:
        place = self._places.get(name)
        if place is None:
            raise KeyError(f"saga {self.name!r} v{self.version} has no step {name!r}")
        return place[0]

    def stage_of(self, name: str) -> int:
        place = self._places.get(name)
        if place is None:
            raise KeyError(f"saga {self.name!r} v{self.version} has no step {name!r}")
        return place[1]

    @property
    def key(self) -> str:
        return f"{self.name}@v{self.version}"

    def render_text(self) -> str:
        """A plain listing: one line per step with its kind, participant and commands."""
        lines = [f"saga {self.name} v{self.version}"]
        for index, stage in enumerate(self.stages, start=1):
            for position, step in enumerate(stage):
                marker = f"{index:>2}." if position == 0 else "   "
                group = " (parallel)" if len(stage) > 1 else ""
                group += " (optional)" if step.optional else ""
                undo = (
                    f"  undo: {step.participant}.{step.compensation}" if step.compensation else ""
                )
                lines.append(
                    f"{marker} {step.name} [{step.kind}]{group}  "
                    f"do: {step.participant}.{step.command}{undo}  "
                    f"timeout {_fmt(step.timeout)}, {_fmt_policy(step.policy)}"
                )
        return "\n".join(lines)

    def render_mermaid(self) -> str:
        """A Mermaid flowchart: forward edges solid, compensations dashed going back."""
        lines = ["flowchart LR", "    start((start))"]
        shapes = {
            StepKind.COMPENSATABLE: ("[", "]"),
            StepKind.PIVOT: ("{{", "}}"),
            StepKind.RETRIABLE: ("([", "])"),
            StepKind.APPROVAL: ("[/", "/]"),
        }
        for step in self.steps:
            left, right = shapes[step.kind]
            label = f"{step.name}<br/>{step.participant}.{step.command}"
            lines.append(f'    {_node(step.name)}{left}"{label}"{right}')
        lines.append("    done((done))")
        previous = ["start"]
        for stage in self.stages:
            current = [_node(step.name) for step in stage]
            lines.extend(f"    {a} --> {b}" for a in previous for b in current)
            previous = current
        lines.extend(f"    {p} --> done" for p in previous)
        undone = [s for s in self.steps if s.compensation]
        if undone:
            lines.append("    undone((compensated))")
            lines.extend(f"    {_node(s.name)} -. {s.compensation} .-> undone" for s in undone)
        return "\n".join(lines)


def _node(name: str) -> str:
    return "s_" + "".join(ch if ch.isalnum() else "_" for ch in name)


def _fmt(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:g}s"


def _fmt_policy(policy: RetryPolicy) -> str:
    tries = "retried until it succeeds" if policy.attempts is None else f"{policy.attempts} tries"
    return f"{tries}, backoff {_fmt(policy.backoff)} x{policy.multiplier:g} cap {_fmt(policy.cap)}"


def _validate(definition: SagaDefinition) -> None:
    where = f"saga {definition.name!r} v{definition.version}"
    if (
        not definition.name
        or not definition.name.replace("-", "_").replace(".", "_").isidentifier()
    ):
        raise DefinitionError(f"saga name {definition.name!r} must be a non-empty identifier")
    if definition.version < 1:
        raise DefinitionError(f"{where}: version must be >= 1")
    if not definition.stages:
        raise DefinitionError(f"{where}: a saga needs at least one step")
    seen: set[str] = set()
    pivot: Step | None = None
    retriable_seen: Step | None = None
    for stage in definition.stages:
        if not stage:
            raise DefinitionError(f"{where}: a parallel group needs at least one step")
        _check_stage(where, stage)
        for step in stage:
            _check_step(where, step)
            if step.name in seen:
                raise DefinitionError(f"{where}: step {step.name!r} is defined twice")
            seen.add(step.name)
            if step.kind is StepKind.PIVOT:
                if pivot is not None:
                    raise DefinitionError(
                        f"{where}: step {step.name!r} is a second pivot "
                        f"(already {pivot.name!r}); a saga has at most one"
                    )
                if retriable_seen is not None:
                    raise DefinitionError(
                        f"{where}: pivot {step.name!r} comes after retriable step "
                        f"{retriable_seen.name!r}"
                    )
                pivot = step
            elif step.kind in (StepKind.COMPENSATABLE, StepKind.APPROVAL):
                if pivot is not None:
                    raise DefinitionError(
                        f"{where}: {step.kind} step {step.name!r} comes after the pivot "
                        f"{pivot.name!r}; once the pivot commits nothing may be undone"
                    )
                if retriable_seen is not None:
                    raise DefinitionError(
                        f"{where}: {step.kind} step {step.name!r} comes after retriable step "
                        f"{retriable_seen.name!r}, which cannot be undone"
                    )
            else:
                retriable_seen = retriable_seen or step


def _check_stage(where: str, stage: Sequence[Step]) -> None:
    if len(stage) > 1:
        kinds = {step.kind for step in stage}
        if StepKind.APPROVAL in kinds:
            raise DefinitionError(f"{where}: an approval cannot be in a parallel group")
        if StepKind.PIVOT in kinds:
            pivot = next(s for s in stage if s.kind is StepKind.PIVOT)
            raise DefinitionError(
                f"{where}: pivot {pivot.name!r} cannot be in a parallel group; "
                "the go/no-go point must be a single step"
            )
        if len(kinds) > 1:
            names = ", ".join(repr(s.name) for s in stage)
            raise DefinitionError(f"{where}: parallel group {names} mixes step kinds")


def _check_step(where: str, step: Step) -> None:
    if not step.name or not step.name.replace("-", "_").isidentifier():
        raise DefinitionError(f"{where}: step name {step.name!r} must be an identifier")
    if not step.participant or not step.command:
        raise DefinitionError(f"{where}: step {step.name!r} needs a participant and a command")
    if step.timeout <= timedelta(0):
        raise DefinitionError(f"{where}: step {step.name!r} needs a positive timeout")
    if step.kind is StepKind.APPROVAL and step.compensation:
        raise DefinitionError(f"{where}: approval {step.name!r} has nothing to compensate")
    if step.kind is StepKind.COMPENSATABLE and not step.compensation:
        raise DefinitionError(
            f"{where}: compensatable step {step.name!r} has no compensation; "
            "give it one or make it the pivot"
        )
    if step.kind is StepKind.RETRIABLE and step.compensation:
        raise DefinitionError(
            f"{where}: retriable step {step.name!r} has a compensation; retriable steps "
            "come after the pivot and are never undone"
        )
    if step.kind is StepKind.PIVOT and step.compensation:
        raise DefinitionError(
            f"{where}: pivot {step.name!r} has a compensation; once the pivot commits the "
            "saga must finish, so it is never undone"
        )


def participants_of(definitions: Iterable[SagaDefinition]) -> set[str]:
    """The participants whose command queues the definitions' steps go to (an approval's
    answer comes from a person, through the orchestrator, not from a queue)."""
    return {
        step.participant
        for definition in definitions
        for step in definition.steps
        if step.kind is not StepKind.APPROVAL
    }
