"""Memory with many sagas waiting: ``sagakit bench --waiting 100000``.

A process runs the orchestrator (the fused runtime, with the orders participant) and
starts N sagas whose second step is an approval that nobody answers for a day; once
every one of them is waiting, it reads its own resident set. State lives in the
database, so the figure should not grow with N. The measuring process is a child of
its own (``python -m bench.waiting``) so that nothing the runner holds is counted.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import logging
import os
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bench import databases, procs, workload
from bench.systems.sagakit_app import participants
from sagakit import SagaDefinition, Step, StepKind, approval

#: The saga that waits: a person confirms the order within a day, then it is approved.
WAITING = SagaDefinition(
    "bench_waiting",
    steps=[
        approval("confirm", timeout=timedelta(days=1)),
        Step(name="approve", participant="orders", command="approve", kind=StepKind.RETRIABLE),
    ],
)
#: Starts in flight at once (each waits for the transaction that carries it).
_IN_FLIGHT = 1024
#: Sagas per start_many call for the ordinary runtime.
_CHUNK = 500


def rss_mb() -> float:
    """The process's resident set now (VmRSS), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def hold(url: str, count: int, seed: int, settle: float, runtime: str) -> dict[str, Any]:
    """Start ``count`` waiting sagas in this process and report its memory: with the
    fused runtime (``fused``), or an orchestrator, its participant and their relays in
    the ordinary runtime over the in-process transport (``plain``)."""
    from sagakit import Orchestrator, Runtime, StartRequest
    from sagakit.stores.postgres import PostgresSagaStore
    from sagakit.transports.memory import MemoryTransport

    store = PostgresSagaStore(url, pool_size=4)
    await store.migrate()
    orchestrator = Orchestrator(store, [WAITING])
    if runtime == "fused":
        running = Runtime().fuse(orchestrator, *participants(store, ["orders"]), batch=512)
    else:
        running = Runtime(MemoryTransport()).add(orchestrator, *participants(store, ["orders"]))
    await running.start()
    gc.collect()
    before = rss_mb()
    started = time.perf_counter()
    ids = iter(range(1, count + 1))

    async def starter() -> None:
        # A fixed set of starters, so the process never holds one object per saga.
        for order_id in ids:
            order = workload.plan(seed, order_id).as_dict()
            await orchestrator.start(WAITING.name, order, saga_id=str(order_id))

    async def chunks() -> None:
        while chunk := [
            StartRequest(WAITING.name, workload.plan(seed, i).as_dict(), saga_id=str(i))
            for i in itertools.islice(ids, _CHUNK)
        ]:
            await orchestrator.start_many(chunk)

    try:
        if runtime == "fused":
            await asyncio.gather(*(starter() for _ in range(_IN_FLIGHT)))
        else:
            await asyncio.gather(*(chunks() for _ in range(4)))
        start_s = time.perf_counter() - started
        await asyncio.sleep(settle)  # timers and sweeps run over the waiting sagas
        gc.collect()
        counts = await store.count_by_status()
        async with store.unit() as unit:
            waiting = await unit.connection.scalar(
                text("SELECT COUNT(*) FROM sagas WHERE status = 'running' AND current_step = :s"),
                {"s": "confirm"},
            )
        return {
            "sagas": count,
            "waiting": int(waiting or 0),
            "statuses": {str(k): int(v) for k, v in counts.items()},
            "start_s": round(start_s, 1),
            "starts_per_s": round(count / start_s, 1) if start_s else None,
            "rss_before_mb": round(before, 1),
            "rss_mb": round(rss_mb(), 1),
            "peak_rss_mb": round(procs.peak_rss_mb(os.getpid()), 1),
            "runtime": runtime,
        }
    finally:
        await running.stop()
        await store.close()


async def measure(
    admin: str, count: int, seed: int, logs: Path, runtime: str = "fused"
) -> dict[str, Any]:
    """Make a database, run :func:`hold` in a child process, drop the database."""
    from bench.runner import ROOT, child_env, tail

    name = f"bench_{uuid.uuid4().hex[:8]}_waiting"
    url = await databases.create(admin, name)
    log = logs / "waiting.log"
    try:
        await databases.install(url)
        await databases.seed_orders(url, seed, 1, count)
        with log.open("ab") as err:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.waiting", "--db", url, "--count", str(count),
                "--seed", str(seed), "--runtime", runtime,
                stdout=asyncio.subprocess.PIPE, stderr=err, env=child_env(), cwd=ROOT,
            )  # fmt: skip
            out, _ = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"the waiting run failed ({process.returncode}): {tail(log)}")
        result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        return result
    finally:
        await databases.drop(admin, name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.waiting")
    parser.add_argument("--db", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--runtime", choices=("fused", "plain"), default="fused")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("sagakit").setLevel(logging.ERROR)
    result = asyncio.run(hold(args.db, args.count, args.seed, args.settle, args.runtime))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
