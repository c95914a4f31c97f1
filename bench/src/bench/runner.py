"""The runner: for every system, a fresh database, measured runs in worker processes,
the invariants after each, a crash and its recovery; then the results.

The runs themselves are :mod:`bench.phases`, the processes they start
:mod:`bench.processes`, a system set up for them :mod:`bench.prepared`, and the
settings :mod:`bench.config`; this module walks the systems through them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from bench import databases, report, targets
from bench.config import ALL_SYSTEMS, ROOT, SAGAKIT, BenchConfig
from bench.phases import cdf_points, crash, measure, percentile
from bench.prepared import Prepared, Service, Unavailable
from bench.processes import (
    Worker,
    child_env,
    kill,
    service_pids,
    start_services,
    stop_services,
    tail,
)
from bench.progress import Progress

__all__ = [
    "ALL_SYSTEMS",
    "QUICK_CRASH",
    "ROOT",
    "SAGAKIT",
    "BenchConfig",
    "Prepared",
    "Service",
    "Unavailable",
    "Worker",
    "cdf_points",
    "child_env",
    "crash",
    "guarded",
    "kill",
    "measure",
    "percentile",
    "run_bench",
    "run_system",
    "service_pids",
    "start_services",
    "stop_services",
    "tail",
]


async def run_system(
    system: str, cfg: BenchConfig, run_id: str, logs: Path, progress: Progress
) -> dict[str, Any]:
    from bench import setups

    try:
        prepared = await setups.prepare(system, cfg, run_id, logs)
    except Unavailable as exc:
        progress.skip(system, str(exc))
        return {"skipped": str(exc)}
    entry: dict[str, Any] = {"runs": [], "open": None, "crash": None}
    try:
        await start_services(prepared, logs)
        # Latency at rest (one saga at a time) is the run at 1, which every system gets.
        for concurrency in sorted({1, *cfg.concurrencies}):
            progress.step(system, f"closed loop, {concurrency} at once")
            spec = {"mode": "closed", "concurrency": concurrency, "duration": cfg.duration}
            entry["runs"].append(await guarded(measure(prepared, cfg, spec, logs, cfg.pg)))
            if _hung(entry["runs"][-1]):
                return entry  # a system that hangs once would hang at every phase
        if system != "raw-asyncpg" and cfg.open_duration > 0:
            progress.step(system, f"open loop, {cfg.rate:g}/s")
            spec = {"mode": "open", "rate": cfg.rate, "duration": cfg.open_duration}
            entry["open"] = await guarded(measure(prepared, cfg, spec, logs, cfg.pg))
            if _hung(entry["open"]):
                return entry
        if system.startswith("sagakit") and cfg.fast_rate > 0 and cfg.open_duration > 0:
            progress.step(system, f"open loop, {cfg.fast_rate:g}/s")
            spec = {"mode": "open", "rate": cfg.fast_rate, "duration": cfg.open_duration}
            entry["open_fast"] = await guarded(measure(prepared, cfg, spec, logs, cfg.pg))
            if _hung(entry["open_fast"]):
                return entry
        if cfg.crash and system != "raw-asyncpg" and (not cfg.quick or system in QUICK_CRASH):
            progress.step(system, "crash and recovery")
            entry["crash"] = await guarded(crash(prepared, cfg, logs))
    finally:
        await stop_services(prepared)
        await prepared.cleanup()
    return entry


#: The systems whose crash column the quick version still runs.
QUICK_CRASH = ("sagakit-fastpath",)


def _hung(run: dict[str, Any]) -> bool:
    return str(run.get("error", "")).startswith("TimeoutError")


async def guarded(work: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """A run that blew up is recorded as such; the bench goes on with the next one."""
    try:
        return await work
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"[:2000]}


async def _settle_close_calls(
    results: dict[str, Any], cfg: BenchConfig, run_id: str, logs: Path, progress: Progress
) -> dict[str, Any]:
    """A head-to-head for each target the sweep left close (bench/head_to_head.py)."""
    from bench import head_to_head

    calls = head_to_head.close_calls(results) if cfg.rounds else []
    progress.add(2 * (cfg.rounds + 1) * len(calls))  # a warm-up run each, then the rounds
    settled = {}
    for mode, peer, best in calls:
        work = head_to_head.head_to_head(cfg, (mode, peer), best, run_id, logs, progress)
        settled[targets.pair_key(mode, peer)] = await guarded(work)
    return settled


async def run_bench(cfg: BenchConfig, *, show: bool = True) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    cfg.out.mkdir(parents=True, exist_ok=True)
    logs = cfg.out / "logs"
    logs.mkdir(exist_ok=True)
    results: dict[str, Any] = {
        "run_id": run_id,
        "started_at": time.time(),
        "config": cfg.to_json(),
        "machine": report.machine(),
        "systems": {},
    }
    steps = len({1, *cfg.concurrencies}) + 3
    with Progress(len(cfg.systems) * steps, show=show) as progress:
        try:
            for system in cfg.systems:
                results["systems"][system] = await run_system(system, cfg, run_id, logs, progress)
            settled = await _settle_close_calls(results, cfg, run_id, logs, progress)
            results["head_to_head"] = settled
        finally:
            await databases.drop_prefixed(cfg.pg, f"bench_{run_id}_")
    results["finished_at"] = time.time()
    results["targets"] = targets.targets(results)
    report.write(results, cfg.out)
    return results
