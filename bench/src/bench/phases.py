"""The phases of a system's turn: one measured run with its figures and the invariants
after it, and the crash with its recovery."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from bench import databases, procs
from bench.config import BenchConfig
from bench.prepared import Prepared
from bench.processes import Worker, kill, service_pids, start_services, stop_services


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def cdf_points(sorted_values: list[float], points: int = 100) -> list[list[float]]:
    if not sorted_values:
        return []
    return [[i / points, percentile(sorted_values, i / points) * 1000] for i in range(points + 1)]


async def measure(
    prepared: Prepared, cfg: BenchConfig, spec: dict[str, Any], logs: Path, admin: str
) -> dict[str, Any]:
    """One measured run: its figures, and the invariants checked after it.

    The warm-up runs in a worker of its own that exits before the measured one starts,
    and the commit counter is read after the measured worker has exited: a PostgreSQL
    backend may hold its statistics for up to ten seconds while idle, but flushes them
    when its connection closes, so this way every commit lands in the right window.
    """
    seconds = float(spec.get("duration", 1))
    rate = float(spec["rate"]) if spec["mode"] == "open" else cfg.orders_per_second
    budget = int(seconds * rate) + 10
    first = prepared.next_order
    prepared.next_order += budget + cfg.warmup
    await prepared.seed_orders(first, budget + cfg.warmup)
    log = logs / f"{prepared.system}.worker.log"
    result_file = logs / f"{prepared.system}-{spec['mode']}-{spec.get('concurrency', 0)}.json"
    if cfg.warmup:
        warm = {"mode": "closed", "concurrency": min(int(spec.get("concurrency", 16)), 16),
                "duration": 120, "seed": cfg.seed, "first": first, "budget": cfg.warmup,
                "settle": 0, "result": str(result_file)}  # fmt: skip
        warmer = await Worker.spawn(prepared, warm, log)
        try:
            await warmer.expect("ready", timeout=300)
            await warmer.send("go")
            await warmer.expect("done", timeout=600)
        finally:
            await warmer.finish()
    spec = {**spec, "seed": cfg.seed, "first": first + cfg.warmup, "budget": budget,
            "settle": cfg.settle, "result": str(result_file)}  # fmt: skip
    worker = await Worker.spawn(prepared, spec, log)
    try:
        await worker.expect("ready", timeout=300)
        pids = {"driver": worker.pid, **service_pids(prepared)}
        commits_before = await databases.commits(admin, prepared.databases)
        cpu_before = {name: procs.cpu_seconds(pid) for name, pid in pids.items()}
        await worker.send("go")
        done = await worker.expect("done", timeout=seconds + 600)
        cpu_after = {name: procs.cpu_seconds(pid) for name, pid in pids.items()}
        rss = {name: round(procs.peak_rss_mb(pid), 1) for name, pid in pids.items()}
        load = os.getloadavg()[0]  # others' work on the machine shows up here
    finally:
        await worker.finish()
    await asyncio.sleep(0.3)  # a closed connection's backend flushes as it exits
    commits_after = await databases.commits(admin, prepared.databases)
    data = json.loads(result_file.read_text())
    result_file.unlink(missing_ok=True)
    verdict = await prepared.check()
    latencies = sorted(data["latencies"])
    completed = len(latencies)
    commits = commits_after - commits_before - int(done.get("observer_transactions", 0))
    cpu = sum(cpu_after[n] - cpu_before[n] for n in cpu_after)
    return {
        "mode": spec["mode"],
        "concurrency": spec.get("concurrency"),
        "rate": spec.get("rate"),
        "completed": completed,
        "errors": data["errors"],
        "first_error": data["first_error"],
        "outcomes": data["outcomes"],
        "elapsed_s": round(data["elapsed"], 3),
        "throughput": round(completed / data["elapsed"], 1) if data["elapsed"] else 0.0,
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "p95_ms": round(percentile(latencies, 0.95) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "commits_per_saga": round(commits / completed, 2)
        if completed and prepared.databases
        else None,
        "cpu_ms_per_saga": round(cpu / completed * 1000, 3) if completed else None,
        "peak_rss_mb": rss,
        "loadavg_1m": round(load, 2),
        "invariants": verdict.as_dict(),
        "cdf_ms": cdf_points(latencies),
    }


async def crash(prepared: Prepared, cfg: BenchConfig, logs: Path) -> dict[str, Any]:
    """Run the workload, SIGKILL every process of the system mid-run, restart it with its
    own recovery, and check the invariants once it is quiet."""
    budget = int((cfg.crash_after + 5) * cfg.orders_per_second)
    first = prepared.next_order
    prepared.next_order += budget
    await prepared.seed_orders(first, budget)
    spec = {"mode": "closed", "concurrency": cfg.crash_concurrency, "duration": 3600,
            "seed": cfg.seed, "first": first, "budget": budget, "warmup": 0, "settle": 0,
            "result": str(logs / "crash-unused.json")}  # fmt: skip
    log = logs / f"{prepared.system}.crash.log"
    worker = await Worker.spawn(prepared, spec, log)
    try:
        await worker.expect("ready", timeout=300)
        await worker.send("go")
        await asyncio.sleep(cfg.crash_after)
    finally:
        worker.kill()
        for service in prepared.services:
            if service.process is not None:
                kill(service.process)
        await worker.process.wait()
    await stop_services(prepared, sig=signal.SIGKILL)
    verdict_at_kill = await prepared.check()
    started = time.perf_counter()
    await start_services(prepared, logs)
    recover = await Worker.spawn(prepared, {"mode": "recover", "timeout": cfg.recover_timeout}, log)
    try:
        await recover.expect("ready", timeout=300)
        await recover.send("go")
        done = await recover.expect("done", timeout=cfg.recover_timeout + 120)
    finally:
        await recover.finish()
    recovery_s = time.perf_counter() - started
    verdict = await prepared.check()
    verdict.system_pending = int(done.get("unfinished", 0))
    return {
        "passed": verdict.passed,
        "summary": verdict.summary(),
        "in_flight_at_kill": verdict_at_kill.violations.get("not_terminal", 0),
        "recovery_s": round(recovery_s, 2),
        "invariants": verdict.as_dict(),
    }
