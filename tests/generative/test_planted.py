"""A check that never fails proves nothing: each bug planted here breaks one guarantee
the way a careless change would, and the generative check must catch it, on a
scenario that passes without it.

Each test first runs its scenario unplanted (it must pass), then planted (it must
fail in the way the bug shows), and makes sure the bug had something to break.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from sagakit import Participant
from sagakit.engine.batching import BatchInbox, WatchedConnection
from sagakit.engine.participant import Handler
from sagakit.model.messages import Envelope, ReplyBody
from sagakit.ports import UnitOfWork
from sagakit.testing.plant import plant_no_barrier
from tests.generative.check import Result, run_and_check
from tests.generative.runners import RUNNERS, Plant
from tests.generative.scenario import Knobs, Scenario, generate

#: What main handled well before the engine's fixes: no handler sleeping past its
#: timeout, no data or reply that is not JSON, no kind given as text. The plants are
#: caught without them.
SOUND = Knobs.without("sleep", "poison", "start:poison", "kind:text")


async def caught(runtime: str, scenario: Scenario, plant: Plant) -> Result:
    """Run unplanted (must pass), then planted; return the planted run."""
    runner = RUNNERS[runtime]
    clean = await run_and_check(runner, scenario)
    assert clean.ok, f"the scenario fails without the plant:\n{clean.report()}"
    planted = await run_and_check(runner, scenario, plant=plant)
    assert not planted.ok, "the planted bug went unnoticed"
    return planted


def kinds(result: Result) -> set[str]:
    return {finding.what for finding in result.findings}


async def test_a_compensation_that_skips_the_barrier_is_caught() -> None:
    """``no-barrier``: a compensation no longer claims its action's key, so the undo of a
    step whose every try failed runs its handler and writes an undo for nothing."""
    scenario = generate(3, RUNNERS["memory-sqlite"].family, SOUND)

    def plant(participants: Sequence[Participant]) -> None:
        for participant in participants:
            plant_no_barrier(participant)

    planted = await caught("memory-sqlite", scenario, plant)
    assert "effects" in kinds(planted)
    assert any("undo" in f.actual and f.what == "effects" for f in planted.findings)


@pytest.mark.postgres
async def test_a_compensation_that_skips_the_inbox_is_caught() -> None:
    """A compensation runs its handler without looking at the inbox: a duplicated
    compensation undoes twice, and an undo for an action that never ran writes one."""
    scenario = generate(4, RUNNERS["memory-postgres"].family, SOUND)

    def plant(participants: Sequence[Participant]) -> None:
        for participant in participants:
            _skip_inbox_on_compensation(participant)

    planted = await caught("memory-postgres", scenario, plant)
    assert "effects" in kinds(planted)


def _skip_inbox_on_compensation(participant: Participant) -> None:
    execute, preclaim = participant.execute, participant._preclaim

    async def planted_execute(unit: UnitOfWork, command: Envelope, handler: Handler) -> ReplyBody:
        if command.op == "compensation":
            return await participant._call(unit, command, handler)
        return await execute(unit, command, handler)

    async def planted_preclaim(inbox: BatchInbox, commands: Sequence[Envelope]) -> None:
        await preclaim(inbox, [env for env in commands if env.op != "compensation"])

    participant.execute = planted_execute  # type: ignore[method-assign]
    participant._preclaim = planted_preclaim  # type: ignore[method-assign]


async def test_held_writes_sent_inside_another_steps_savepoint_are_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The lost write, planted back: a step's savepoint opens *before* the writes other
    steps hold with ``ctx.write`` go out, so when that step fails after a statement of
    its own, its rollback takes the others' writes with it, and their sagas complete
    without their effects."""
    scenario = generate(5, RUNNERS["fused-sqlite"].family, SOUND)
    swept: list[int] = []

    async def planted_open(self: WatchedConnection) -> None:
        assert self._lazy is not None
        step, opener = self._lazy
        others = [held for held in self._held if held[0] != step]
        opened = opener()
        await opened.__aenter__()  # the savepoint first ...
        self._opened = opened
        if others:
            swept.append(len(others))
        await self.flush()  # ... then everyone's held writes, inside it

    def plant(_participants: Sequence[Participant]) -> None:
        monkeypatch.setattr(WatchedConnection, "_open_savepoint", planted_open)

    planted = await caught("fused-sqlite", scenario, plant)
    assert swept, "no step's savepoint took another's held writes: nothing to break"
    assert "effects" in kinds(planted)


async def test_a_grouped_write_that_loses_a_row_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fused runtime sends the same held write of many steps as one ``executemany``;
    a store that drops the last row of such a group loses one step's effect."""
    scenario = generate(
        6,
        RUNNERS["fused-sqlite"].family,
        Knobs.without(
            "refuse", "raise", "transient", "sleep", "poison", "start:poison", "kind:text"
        ),
    )
    lost: list[object] = []

    def plant(participants: Sequence[Participant]) -> None:
        unit_class = participants[0].store.unit_class  # type: ignore[attr-defined]
        write_many = unit_class.write_many

        async def planted(unit: Any, statement: Any, rows: Sequence[Any]) -> None:
            if len(rows) > 1:
                lost.append(rows[-1])
                rows = rows[:-1]
            await write_many(unit, statement, rows)

        monkeypatch.setattr(unit_class, "write_many", planted)

    planted = await caught("fused-sqlite", scenario, plant)
    assert lost, "no group of writes was sent: this plant had nothing to break"
    assert {"effects", "totals"} <= kinds(planted)
