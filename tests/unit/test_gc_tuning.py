"""A runtime sets the garbage collector once per process, only ever upwards, and not at
all when told not to. Each case runs in a fresh interpreter: the collector is global."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from sagakit.engine import gc_tuning

CHILD = textwrap.dedent(
    """
    import asyncio, gc, json, sys
    from sagakit import Runtime
    from sagakit.transports.memory import MemoryTransport

    before = sys.argv[1]
    if before != "default":
        gc.set_threshold(*json.loads(before))

    async def main():
        runtime = Runtime(MemoryTransport(), tune_collector=sys.argv[2] == "on")
        await runtime.start()
        await runtime.stop()

    started = gc.get_threshold()
    asyncio.run(main())
    found = {"started": started, "threshold": gc.get_threshold(),
             "frozen": gc.get_freeze_count()}
    from sagakit.engine import gc_tuning
    found["again"] = gc_tuning.tune()  # a second runtime's start changes nothing more
    print(json.dumps(found))
    """
)


def _child(before: str, tune: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, before, tune],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_a_runtime_raises_the_default_thresholds_and_freezes_what_start_up_left() -> None:
    found = _child("default", "on")
    assert found["started"] != list(gc_tuning.THRESHOLDS)
    assert found["threshold"] == list(gc_tuning.THRESHOLDS)
    assert isinstance(found["frozen"], int) and found["frozen"] > 1000
    assert found["again"] is False


@pytest.mark.parametrize("before", [[100_000, 5, 5], [1000, 50, 500]])
def test_thresholds_are_only_ever_raised(before: list[int]) -> None:
    found = _child(json.dumps(before), "on")
    assert found["threshold"] == [
        max(a, b) for a, b in zip(before, gc_tuning.THRESHOLDS, strict=True)
    ]


def test_a_runtime_told_not_to_leaves_the_collector_alone() -> None:
    found = _child("default", "off")
    assert found["threshold"] == found["started"]
    assert found["frozen"] == 0
