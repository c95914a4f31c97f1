"""sagakit.testing: the harness, its jumping clock and its seeded message faults."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest

from sagakit import StepStatus
from sagakit.testing import Faults, SagaHarness, forward_only
from tests.integration.shop import check_effects, create_effects, effects, order_participants
from tests.sagas import ORDER


async def test_a_thirty_second_timeout_takes_no_time() -> None:
    async with SagaHarness([ORDER]) as h:
        saga_id = await h.start("order", {"amount": 5})  # nobody serves these commands
        assert await h.advance(timedelta(seconds=29)) == 0
        assert await h.advance(timedelta(seconds=2)) == 1
        state = await h.state(saga_id)
        assert state.steps["reserve"].status is StepStatus.RETRY_WAIT
        types = [e.type for e in await h.history(saga_id)]
        assert types[-2:] == ["StepTimedOut", "RetryScheduled"]


async def test_a_saga_nobody_answers_ends_needing_attention_not_compensated() -> None:
    # The reservation may or may not have happened; its compensation is never
    # confirmed either, so the saga must not claim to be compensated.
    async with SagaHarness([ORDER]) as h:
        saga_id = await h.start("order", {})
        [state] = (await h.run_until_terminal([saga_id])).values()
        types = [e.type for e in await h.history(saga_id)]
    assert state.status == "needs_attention"
    assert "compensation of reserve keeps failing" in (state.reason or "")
    assert types.count("StepTimedOut") == 3 + 8  # three tries, then eight compensations


@pytest.mark.parametrize(
    "faults",
    [
        Faults(duplicate=0.3, seed=1),
        Faults(reorder=0.3, seed=2),
        Faults(delay=0.3, seed=3),
        Faults(drop=0.1, seed=4),
        Faults(drop=0.05, duplicate=0.1, delay=0.1, reorder=0.1, seed=5),
    ],
    ids=["duplicate", "reorder", "delay", "drop", "all"],
)
async def test_faults_never_break_all_or_nothing(faults: Faults) -> None:
    harness = SagaHarness([ORDER], faults=faults)
    harness.add(*order_participants(harness.store, flaky={"charge"}))
    async with harness as h:
        await create_effects(h.store)
        ids = [
            await h.start("order", {"decline": i % 4 == 1, "far": i % 4 == 2}, saga_id=f"s{i}")
            for i in range(24)
        ]
        states = await h.run_until_terminal(ids, timeout=30)
        statuses = {i: s.status.value for i, s in states.items()}
        assert check_effects(statuses, await effects(h.store)) == []
        for saga_id in ids:
            assert forward_only(saga_id, await h.history(saga_id)) == []
        counts = h.faulty.counts if h.faulty else None
    doomed = {f"s{i}" for i in range(24) if i % 4 in (1, 2)}
    assert {i for i, s in statuses.items() if s == "compensated"} >= doomed
    if not (faults.drop or faults.delay):
        # Without lost or late messages no step can run out of tries.
        assert Counter(statuses.values()) == {"completed": 12, "compensated": 12}
    assert counts is not None
    injected = counts.dropped + counts.duplicated + counts.delayed + counts.reordered
    assert injected > 0, "the faults were never injected"


def test_fault_probabilities_are_checked() -> None:
    with pytest.raises(ValueError, match=r"drop=1\.5"):
        Faults(drop=1.5)
