"""Saga-aware circuit breakers for the outside systems participants call.

A participant that calls a payment gateway or a carrier's API wraps the call in a
breaker. After ``failures`` failures within ``window`` the breaker opens: calls fail
at once, without touching the dependency, for ``cooldown``; then one trial call is let
through (half-open), and its outcome closes or reopens the breaker. A trial that fails
raises :class:`BreakerOpen` too (its cause chained): the outage was already known.

What makes it saga-aware is what an open breaker does to the step: it fails as
*deferred* - retryable, with the time the breaker will let a trial through - so the
orchestrator retries the step then, without spending the step's retry budget. The same
holds for a compensation: a refund owed while the gateway is down waits for it, and
spends none of its own retries. A healthy order is neither compensated nor stuck
because a dependency was down for a minute, an owed undo does not become a case for a
person, and the dependency is not hammered while it recovers.

Breakers decide in memory (a call pays no database round trip) and their state is
written to the participant's database in the transaction of each batch that changed
it, so ``sagakit breakers`` can show it and a restarted process keeps a breaker open.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from types import TracebackType
from typing import Any

from sagakit.errors import TransientError
from sagakit.ports import BreakerRecords, UnitOfWork


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class BreakerOpen(TransientError):
    """The breaker is open: the dependency is not called; try again after ``retry_after``
    seconds. The step is deferred, not failed."""

    def __init__(
        self, name: str, retry_after: float, *, trial: BaseException | None = None
    ) -> None:
        why = f" again (its trial call failed: {type(trial).__name__}: {trial})" if trial else ""
        super().__init__(f"circuit breaker {name!r} is open{why}; retry in {retry_after:.1f}s")
        self.name = name
        self.retry_after = retry_after


@dataclass
class CircuitBreaker:
    """One breaker, named after the dependency it protects.

    ``counts`` decides which exceptions are the dependency's failures (by default every
    exception but a business refusal); the others pass through untouched.
    """

    name: str
    failures: int = 5
    window: timedelta = timedelta(seconds=30)
    cooldown: timedelta = timedelta(seconds=10)
    counts: Callable[[BaseException], bool] = field(default=lambda exc: dependency_failure(exc))  # noqa: PLW0108 - defined below the class
    clock: Callable[[], float] = time.time
    state: BreakerState = BreakerState.CLOSED
    recent: list[float] = field(default_factory=list)
    opened_at: float | None = None
    trial_running: bool = False
    changed: bool = False
    calls: int = 0
    rejected: int = 0
    transitions: int = 0

    def __post_init__(self) -> None:
        if self.failures < 1:
            raise ValueError("a breaker needs a failure threshold of at least 1")

    # -- the state machine --------------------------------------------------------------

    def check(self) -> None:
        """Let a call through, or raise BreakerOpen."""
        now = self.clock()
        if self.state is BreakerState.OPEN:
            assert self.opened_at is not None
            wait = self.opened_at + self.cooldown.total_seconds() - now
            if wait > 0:
                self.rejected += 1
                raise BreakerOpen(self.name, wait)
            self._move(BreakerState.HALF_OPEN)
        if self.state is BreakerState.HALF_OPEN:
            if self.trial_running:
                self.rejected += 1
                raise BreakerOpen(self.name, min(1.0, self.cooldown.total_seconds()))
            self.trial_running = True
        self.calls += 1

    def succeeded(self) -> None:
        self.trial_running = False
        if self.state is not BreakerState.CLOSED:
            self.recent.clear()
            self._move(BreakerState.CLOSED)

    def failed(self) -> None:
        now = self.clock()
        self.trial_running = False
        if self.state is BreakerState.HALF_OPEN:
            self._open(now)
            return
        horizon = now - self.window.total_seconds()
        self.recent = [t for t in self.recent if t > horizon] + [now]
        self.changed = True
        if len(self.recent) >= self.failures:
            self._open(now)

    def _open(self, now: float) -> None:
        self.opened_at = now
        self.recent.clear()
        self._move(BreakerState.OPEN)

    def _move(self, state: BreakerState) -> None:
        if state is not self.state:
            self.state = state
            self.transitions += 1
        self.changed = True

    # -- use as ``async with breaker:`` ---------------------------------------------------

    async def __aenter__(self) -> CircuitBreaker:
        self.check()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        trial = self.state is BreakerState.HALF_OPEN
        if exc is None:
            self.succeeded()
        elif self.counts(exc):
            self.failed()
            if trial:
                # The trial found the dependency still down and the breaker open again:
                # the step that carried it is deferred like the ones it stood in for,
                # not charged a try for an outage that is already known.
                raise BreakerOpen(self.name, self.cooldown.total_seconds(), trial=exc) from exc
        else:
            self.trial_running = False  # not the dependency's fault; the trial is over

    # -- persistence ----------------------------------------------------------------------

    def row(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state.value,
            "failures": len(self.recent),
            "opened_at": self.opened_at,
            "updated_at": self.clock(),
        }

    def restore(self, row: Mapping[str, Any]) -> None:
        self.state = BreakerState(row["state"])
        self.opened_at = row["opened_at"]
        if self.state is BreakerState.HALF_OPEN:
            self.state = BreakerState.OPEN  # the trial in flight died with the process


def dependency_failure(exc: BaseException) -> bool:
    """The default for what a breaker counts: anything but a business refusal."""
    from sagakit.errors import StepRejected

    return not isinstance(exc, StepRejected | BreakerOpen)


async def save(records: BreakerRecords, breakers: Sequence[CircuitBreaker]) -> None:
    """Write the state of the breakers that changed, in the caller's transaction
    (``unit.records.breakers``)."""
    changed = [b for b in breakers if b.changed]
    if not changed:
        return
    await records.save([b.row() for b in changed])
    for breaker in changed:
        breaker.changed = False


async def load(records: BreakerRecords, breakers: Sequence[CircuitBreaker]) -> None:
    """Pick up where a previous process left the breakers (an open one stays open). A
    breaker the database has not seen is written with the batch, so ``sagakit breakers``
    lists every breaker in use, not only those that ever tripped."""
    by_name = {b.name: b for b in breakers}
    seen = set()
    for row in await records.load(list(by_name)):
        by_name[row["name"]].restore(row)
        seen.add(row["name"])
    for name in by_name.keys() - seen:
        by_name[name].changed = True


async def read_all(unit: UnitOfWork) -> list[dict[str, Any]]:
    """Every breaker's state in ``unit``'s store."""
    return await unit.records.breakers.all()
