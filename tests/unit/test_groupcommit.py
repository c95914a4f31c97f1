"""Group commit: concurrent callers share one flush, and each gets its own outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from sagakit.engine.groupcommit import GroupCommit


class Recorder:
    """A flush that doubles numbers, records each batch, and refuses negative ones."""

    def __init__(self, *, pause: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.pause = pause

    async def __call__(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        await asyncio.sleep(self.pause)
        if any(item < 0 for item in items):
            raise ValueError(f"negative among {list(items)}")
        return [item * 2 for item in items]


async def test_calls_made_together_share_one_flush() -> None:
    flush = Recorder()
    group = GroupCommit(flush)
    results = await asyncio.gather(*(group.submit(i) for i in range(10)))
    assert results == [i * 2 for i in range(10)]
    assert flush.batches == [list(range(10))]


async def test_calls_made_during_a_flush_go_in_the_next() -> None:
    flush = Recorder(pause=0.05)
    group = GroupCommit(flush)
    first = asyncio.ensure_future(group.submit(1))
    await asyncio.sleep(0.01)  # the first flush is running now
    later = await asyncio.gather(*(group.submit(i) for i in (2, 3, 4)))
    assert await first == 2
    assert later == [4, 6, 8]
    assert flush.batches == [[1], [2, 3, 4]]


async def test_a_batch_is_cut_at_its_limit() -> None:
    flush = Recorder()
    group = GroupCommit(flush, limit=4)
    await asyncio.gather(*(group.submit(i) for i in range(10)))
    assert flush.batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


async def test_a_failing_item_fails_only_its_own_caller() -> None:
    flush = Recorder()
    group = GroupCommit(flush)
    outcomes = await asyncio.gather(*(group.submit(i) for i in (1, -1, 2)), return_exceptions=True)
    assert outcomes[0] == 2 and outcomes[2] == 4
    assert isinstance(outcomes[1], ValueError)
    assert "negative among [-1]" in str(outcomes[1])  # its error from its own flush
    assert flush.batches == [[1, -1, 2], [1], [-1], [2]]


async def test_a_caller_that_stops_waiting_leaves_the_others_answered() -> None:
    flush = Recorder(pause=0.05)
    group = GroupCommit(flush)
    first = asyncio.ensure_future(group.submit(1))
    await asyncio.sleep(0.01)
    gone = asyncio.ensure_future(group.submit(2))
    kept = asyncio.ensure_future(group.submit(3))
    await asyncio.sleep(0)
    gone.cancel()
    assert await first == 2
    assert await kept == 6
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert flush.batches == [[1], [3]]  # the cancelled item was never flushed


async def test_it_keeps_working_after_each_flush() -> None:
    flush = Recorder()
    group = GroupCommit(flush)
    assert await group.submit(5) == 10
    assert await group.submit(6) == 12
    assert flush.batches == [[5], [6]]


async def test_an_error_of_the_whole_transaction_answers_everyone_at_once() -> None:
    flush = Recorder()
    group = GroupCommit(flush, shared=lambda exc: "negative" in str(exc))
    outcomes = await asyncio.gather(*(group.submit(i) for i in (1, -1, 2)), return_exceptions=True)
    assert all(isinstance(outcome, ValueError) for outcome in outcomes)
    assert flush.batches == [[1, -1, 2]]  # nobody tried again alone


async def test_callers_of_a_flush_that_is_cancelled_are_not_left_waiting() -> None:
    flush = Recorder(pause=0.05)
    group = GroupCommit(flush)
    callers = [asyncio.ensure_future(group.submit(i)) for i in (1, -1, 2)]
    await asyncio.sleep(0.075)  # the shared flush failed; the first one alone is running
    assert flush.batches == [[1, -1, 2], [1]]
    drain = next(
        t
        for t in asyncio.all_tasks()
        if t not in callers and not t.done() and t is not asyncio.current_task()
    )
    drain.cancel()  # what the event loop's shutdown does to a running flush
    outcomes = await asyncio.wait_for(asyncio.gather(*callers, return_exceptions=True), 1)
    assert all(isinstance(outcome, asyncio.CancelledError) for outcome in outcomes)
