"""The nemesis's plan: which fault strikes what, and when, all drawn from one seed.

Every kind of fault gets a fixed number of evenly spaced slots over the run (so a tier
is sure of its counts) with a seeded jitter inside each slot and a seeded target. The
faults on shared infrastructure (the broker, PostgreSQL, a service's database) never
overlap one another, so each one's effect can be told apart in the logs; process
faults (kills and pauses) land anywhere, on top of them too.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from sagakit_shop.distributed import PROCESSES

FaultKind = Literal["kill", "pause", "broker", "postgres", "isolate"]
KINDS: tuple[FaultKind, ...] = ("kill", "pause", "broker", "postgres", "isolate")

#: The service whose database the nemesis cuts off for longer than its step's whole
#: retry budget (reserve_stock: 3 x 10 s): the saga compensates while the reservation is
#: still bouncing between retries, so the release can overtake it, which is what the
#: participants' barrier is for. (The charge calls an outside gateway and so retries for
#: 8 x 10 s; cutting payment off as long only defers it.)
ISOLATED = ("inventory",)

#: How long each infrastructure fault lasts, in seconds (drawn between the two).
PAUSE_SECONDS = (0.5, 4.0)
BROKER_SECONDS = (2.0, 8.0)
ISOLATE_SECONDS = (36.0, 44.0)
#: A PostgreSQL restart takes what it takes; this is what the plan reserves for it.
POSTGRES_SECONDS = 6.0
#: Quiet time kept free of faults at the start (services warming up) and at the end.
MARGIN = 4.0


@dataclass(frozen=True, slots=True)
class Cadence:
    """Seconds between faults of each kind (0: none), and how many at least."""

    kill: float = 6.0
    pause: float = 20.0
    broker: float = 120.0
    postgres: float = 240.0
    isolate: float = 600.0
    #: At least this many of each infrastructure fault, however short the run.
    at_least: dict[str, int] = field(
        default_factory=lambda: {"broker": 1, "postgres": 1, "isolate": 1}
    )

    def count(self, kind: FaultKind, seconds: float) -> int:
        every = getattr(self, kind)
        if every <= 0:
            return 0
        return max(int(seconds // every), self.at_least.get(kind, 0))


@dataclass(frozen=True, slots=True)
class Fault:
    """One planned fault: ``at`` seconds after the load starts, for ``seconds``."""

    at: float
    kind: FaultKind
    target: str
    seconds: float = 0.0

    def describe(self) -> str:
        what = {
            "kill": f"SIGKILL {self.target}",
            "pause": f"SIGSTOP {self.target} for {self.seconds:.1f}s",
            "broker": f"RabbitMQ stop_app for {self.seconds:.1f}s",
            "postgres": "PostgreSQL restart -m immediate",
            "isolate": f"{self.target}'s database refuses connections for {self.seconds:.0f}s",
        }[self.kind]
        return f"{self.at:7.1f}s  {what}"

    def as_json(self) -> dict[str, object]:
        return {
            "at": round(self.at, 2),
            "fault": self.kind,
            "target": self.target,
            "seconds": round(self.seconds, 2),
        }


def plan(
    seed: int, seconds: float, cadence: Cadence, targets: Sequence[str] = PROCESSES
) -> list[Fault]:
    """The whole schedule for a run of ``seconds``, in time order; kills and pauses
    strike one of ``targets`` (the processes' names) each."""
    rng = random.Random(seed)  # noqa: S311 - a seeded schedule, not security
    window = max(seconds - 2 * MARGIN, 1.0)
    faults = _process_faults(rng, window, cadence, targets)
    faults += _infrastructure_faults(rng, window, cadence)
    return sorted((_shifted(f) for f in faults), key=lambda f: f.at)


def _shifted(fault: Fault) -> Fault:
    return Fault(fault.at + MARGIN, fault.kind, fault.target, fault.seconds)


def _slots(rng: random.Random, count: int, window: float) -> list[float]:
    """``count`` moments, one in each equal slice of ``window``."""
    if count <= 0:
        return []
    width = window / count
    return [i * width + rng.uniform(0.1, 0.9) * width for i in range(count)]


def _process_faults(
    rng: random.Random, window: float, cadence: Cadence, targets: Sequence[str]
) -> list[Fault]:
    faults = [
        Fault(at, "kill", rng.choice(targets))
        for at in _slots(rng, cadence.count("kill", window), window)
    ]
    faults += [
        Fault(at, "pause", rng.choice(targets), rng.uniform(*PAUSE_SECONDS))
        for at in _slots(rng, cadence.count("pause", window), window)
    ]
    return faults


def _infrastructure_faults(rng: random.Random, window: float, cadence: Cadence) -> list[Fault]:
    """Broker restarts, PostgreSQL restarts and isolations, interleaved, never touching."""
    kinds: list[FaultKind] = []
    for kind in ("broker", "postgres", "isolate"):
        kinds += [kind] * cadence.count(kind, window)
    rng.shuffle(kinds)
    if not kinds:
        return []
    lasting = [_duration(rng, kind) for kind in kinds]
    # Spread them evenly; each starts in its own slice, and slices are long enough for
    # the fault and a breath after it when the run allows (else they queue up).
    width = window / len(kinds)
    faults = []
    free_at = 0.0
    for i, (kind, lasts) in enumerate(zip(kinds, lasting, strict=True)):
        start = max(free_at, i * width + rng.uniform(0.0, max(width - lasts, 0.0) * 0.8))
        target = rng.choice(ISOLATED) if kind == "isolate" else "-"
        faults.append(Fault(start, kind, target, lasts))
        free_at = start + lasts + 5.0
    return faults


def _duration(rng: random.Random, kind: FaultKind) -> float:
    if kind == "broker":
        return rng.uniform(*BROKER_SECONDS)
    if kind == "isolate":
        return rng.uniform(*ISOLATE_SECONDS)
    return POSTGRES_SECONDS


def counts(faults: list[Fault]) -> dict[str, int]:
    return {kind: sum(1 for f in faults if f.kind == kind) for kind in KINDS}
