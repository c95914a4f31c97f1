"""Head to head: a close call between two systems, settled by runs taken in turns.

The sweep runs one system after another, so the two figures a target compares were
taken minutes apart, and a shared machine's speed is not steady over minutes: sagaz,
whose code never changes here, took 1.14 ms of CPU a saga in one run and 1.73 in another
on the same day. A ratio near its target could then turn on when each system ran. So
where the sweep's ratio is within a factor of two of a target, either way, the two
systems meet again, each at the concurrency where it did best in the sweep, measured
``rounds`` times in turns (A B, B A, A B, ...), so that a drift in the machine's speed
falls on both alike. The target then reads the median of the rounds' ratios.

Each system gets a fresh database, warmed the way the sweep's earlier runs warm it
before its best one: a run at the same concurrency whose figures are dropped, then
ANALYZE. (With a database fresh for every run, sagaz once ran at a third of its sweep
figure.) Its rounds then share that database, as a sweep's runs do, so a run that
breaks the invariants fails every later round of its system too. Systems
with long-lived services (the distributed mode, Temporal's server) are not paired:
their idle services would run beside the other system's runs.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from bench import report
from bench.runner import BenchConfig, Prepared, guarded, measure, stop_services

#: Systems whose runs need services of their own running between runs.
WITH_SERVICES = ("sagakit-distributed", "temporal")

#: What a head-to-head run keeps of a measured run.
_KEPT = ("concurrency", "throughput", "p50_ms", "cpu_ms_per_saga", "errors", "first_error", "error")


def close_calls(results: dict[str, Any]) -> list[tuple[str, str, dict[str, int]]]:
    """(sagakit mode, peer, the concurrency where each did best) for every peer target
    whose sweep ratio is within a factor of two of what it wants, both systems having
    run and neither having services."""
    calls = []
    for mode in report.IN_PROCESS:
        mine = report.best(results, mode)
        for peer, want in report.PEER_TARGETS.items():
            theirs = report.best(results, peer)
            if mine is None or theirs is None or not theirs["throughput"]:
                continue
            if mode in WITH_SERVICES or peer in WITH_SERVICES:
                continue
            if want / 2 <= mine["throughput"] / theirs["throughput"] <= want * 2:
                best = {mode: mine["concurrency"], peer: theirs["concurrency"]}
                calls.append((mode, peer, best))
    return calls


async def head_to_head(
    cfg: BenchConfig,
    pair: tuple[str, str],
    concurrency: dict[str, int],
    run_id: str,
    logs: Path,
    progress: report.Progress,
) -> dict[str, Any]:
    """``pair`` measured in turns, ``cfg.rounds`` times; each round's ratio is the first
    system's sagas/s over the second's, and ``ratio`` their median (None if no round
    had both runs keep their invariants)."""
    from bench import databases, setups

    prepared: dict[str, Prepared] = {}
    rounds: list[dict[str, Any]] = []
    try:
        for system in pair:
            progress.step(system, f"warming up for {_other(pair, system)}")
            ready = prepared[system] = await setups.prepare(system, cfg, run_id, logs)
            await _run(ready, cfg, concurrency[system], logs)
            for name in ready.databases:
                await databases.analyze(databases.database_url(cfg.pg, name))
        for number in range(cfg.rounds):
            order = pair if number % 2 == 0 else pair[::-1]
            runs: dict[str, Any] = {"order": list(order)}
            for system in order:
                progress.step(system, f"head to head with {_other(pair, system)}")
                runs[system] = await _run(prepared[system], cfg, concurrency[system], logs)
            first, second = runs[pair[0]], runs[pair[1]]
            if first["passed"] and second["passed"] and second.get("throughput"):
                runs["ratio"] = round(first["throughput"] / second["throughput"], 3)
            rounds.append(runs)
    finally:
        for ready in prepared.values():
            await stop_services(ready)
            await ready.cleanup()
    ratios = [r["ratio"] for r in rounds if "ratio" in r]
    return {
        "pair": list(pair),
        "concurrency": concurrency,
        "rounds": rounds,
        "ratio": round(statistics.median(ratios), 3) if ratios else None,
    }


async def _run(
    prepared: Prepared, cfg: BenchConfig, concurrency: int, logs: Path
) -> dict[str, Any]:
    spec = {"mode": "closed", "concurrency": concurrency, "duration": cfg.duration}
    run = await guarded(measure(prepared, cfg, spec, logs, cfg.pg))
    kept = {k: run[k] for k in _KEPT if k in run}
    kept["passed"] = bool(run.get("invariants", {}).get("passed"))
    return kept


def _other(pair: tuple[str, str], system: str) -> str:
    return pair[1] if system == pair[0] else pair[0]
