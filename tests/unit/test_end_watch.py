"""EndWatch: waiters answered by announcements, by memory, and by the poll as a backstop."""

from __future__ import annotations

import asyncio
import json

import pytest

from sagakit.stores.ends import EndWatch, announcements, heard


def test_announcements_fit_a_notify_and_read_back_whole() -> None:
    ended = [(f"order-{n:05d}-with-a-long-enough-id", "compensated") for n in range(600)]
    ended.append(('a "quoted", comma id', "completed"))

    payloads = announcements(ended)

    assert len(payloads) > 1
    assert all(len(p.encode()) < 8000 for p in payloads)
    assert [pair for p in payloads for pair in heard(p)] == ended
    assert announcements([]) == []


@pytest.mark.parametrize("payload", ["", "not json", "{}", "[1, 2]", '[["only-one"]]'])
def test_an_announcement_it_cannot_read_is_nothing(payload: str) -> None:
    assert heard(payload) == []


class Projection:
    """A stand-in for the store's projection, counting how often it is asked."""

    def __init__(self) -> None:
        self.status: dict[str, str] = {}
        self.asked = 0

    async def __call__(self, ids: object) -> dict[str, str]:
        self.asked += 1
        return {i: s for i, s in self.status.items() if i in ids}  # type: ignore[operator]


async def test_an_announced_end_answers_without_asking_the_projection_again() -> None:
    projection = Projection()
    projection.status = {"a": "running"}

    async def live() -> bool:
        return True

    watch = EndWatch(projection, live, backstop=60)
    waiting = asyncio.create_task(watch.wait(["a"], timeout=5))
    await asyncio.sleep(0.05)
    assert projection.asked == 1  # the first look, at once

    watch.saw(heard(json.dumps([["a", "completed"], ["x", "compensated"]])))

    assert await waiting == {"a": "completed"}
    assert projection.asked == 1
    assert await watch.wait(["x"], timeout=0.01) == {"x": "compensated"}  # remembered
    await watch.close()


async def test_a_missed_announcement_is_found_by_the_poll() -> None:
    projection = Projection()
    projection.status = {"a": "running"}
    watch = EndWatch(projection, None, poll=0.01)
    waiting = asyncio.create_task(watch.wait(["a", "a"], timeout=5))
    await asyncio.sleep(0.05)
    assert not waiting.done()

    projection.status["a"] = "needs_attention"

    assert await asyncio.wait_for(waiting, 1) == {"a": "needs_attention"}
    await watch.close()


async def test_a_status_that_is_not_an_end_answers_nobody() -> None:
    projection = Projection()
    projection.status = {"a": "compensating"}
    watch = EndWatch(projection, None, poll=0.01)
    with pytest.raises(TimeoutError, match=r"a \(compensating\)"):
        await watch.wait(["a"], timeout=0.1)
    watch.saw([("a", "running"), ("b", "a-status-from-a-later-version"), ("c", "completed")])
    assert list(watch._recent) == ["c"]
    await watch.close()


async def test_it_remembers_only_the_latest_ends() -> None:
    watch = EndWatch(Projection(), None, remember=3)
    watch.saw((f"s{n}", "completed") for n in range(5))
    assert list(watch._recent) == ["s2", "s3", "s4"]
