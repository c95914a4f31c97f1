"""One measured run of one system, in a process of its own: ``python -m bench.worker``.

The runner talks to it over stdin/stdout, one line each way per phase, so that it can
read the database's commit counter and every process's CPU time exactly when the
measured window opens and closes:

    worker: @@ {"event": "ready"}        (system open, warmed up, statistics settled)
    runner: go
    worker: @@ {"event": "done", ...}    (the load has finished; result file written)
    runner: exit

In ``recover`` mode the worker opens the system after a crash, lets its own recovery
run, and reports how many sagas it left unfinished.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from bench.load import Harness, LoadResult, closed_loop, open_loop, prepare

#: Every system the bench knows, as ``module:class`` of its harness.
SYSTEMS: dict[str, str] = {
    "sagakit-fastpath": "bench.systems.sagakit_local:FastPathHarness",
    "sagakit-fastpath-statements": "bench.systems.sagakit_local:FastPathStatementsHarness",
    "sagakit-inprocess": "bench.systems.sagakit_local:InProcessHarness",
    "sagakit-embedded": "bench.systems.sagakit_local:EmbeddedHarness",
    "sagakit-distributed": "bench.systems.sagakit_distributed:DriverHarness",
    "raw-asyncpg": "bench.systems.raw:RawHarness",
    "dbos": "bench.systems.dbos_peer:DBOSHarness",
    "temporal": "bench.systems.temporal_peer:TemporalHarness",
    "sagaz": "bench.systems.sagaz_peer:SagazHarness",
}

PREFIX = "@@ "


def make_harness(system: str, db: str, options: dict[str, Any]) -> Harness:
    module, _, name = SYSTEMS[system].partition(":")
    factory = getattr(importlib.import_module(module), name)
    harness: Harness = factory(db, options)
    return harness


def say(event: str, **fields: Any) -> None:
    sys.stdout.write(PREFIX + json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


async def hear(word: str) -> None:
    """Wait for ``word`` on stdin; end of input counts as ``exit``."""
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line or line.strip() == word or line.strip() == "exit":
            return


async def run(system: str, db: str, options: dict[str, Any], spec: dict[str, Any]) -> None:
    harness = make_harness(system, db, options)
    mode = spec["mode"]
    await harness.open(recover=mode == "recover")
    try:
        if mode == "recover":
            say("ready")
            await hear("go")
            start = time.perf_counter()
            left = await harness.quiesce(float(spec.get("timeout", 120)))
            say("done", unfinished=left, elapsed=time.perf_counter() - start)
        else:
            await _measured(harness, spec)
        await hear("exit")
    finally:
        await harness.close()


async def _measured(harness: Harness, spec: dict[str, Any]) -> None:
    seed, first, budget = int(spec["seed"]), int(spec["first"]), int(spec["budget"])
    concurrency = int(spec.get("concurrency", 1))
    prepare(seed, first, budget)
    await asyncio.sleep(float(spec.get("settle", 1.2)))  # let the commit counters catch up
    say("ready")
    await hear("go")
    watched = harness.observer_transactions
    result: LoadResult
    if spec["mode"] == "open":
        result = await open_loop(
            harness,
            seed=seed,
            first=first,
            budget=budget,
            rate=float(spec["rate"]),
            duration=float(spec["duration"]),
        )
    else:
        result = await closed_loop(
            harness,
            seed=seed,
            first=first,
            budget=budget,
            concurrency=concurrency,
            duration=float(spec["duration"]),
        )
    Path(spec["result"]).write_text(json.dumps(result.as_dict()))
    say(
        "done",
        completed=result.completed,
        errors=result.errors,
        first_error=result.first_error,
        elapsed=result.elapsed,
        observer_transactions=harness.observer_transactions - watched,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.worker")
    parser.add_argument("--system", required=True, choices=sorted(SYSTEMS))
    parser.add_argument("--db", required=True)
    parser.add_argument("--options", default="{}")
    parser.add_argument("--spec", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("sagakit").setLevel(logging.ERROR)  # refusals are the workload, not news
    asyncio.run(run(args.system, args.db, json.loads(args.options), json.loads(args.spec)))


if __name__ == "__main__":
    main()
