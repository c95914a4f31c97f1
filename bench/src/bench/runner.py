"""The runner: for every system, a fresh database, measured runs in worker processes,
the invariants after each, a crash and its recovery; then the results."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import databases, procs, report, workload
from bench.worker import PREFIX

ROOT = Path(__file__).resolve().parents[3]

#: Systems in the order they run (and appear in the tables).
ALL_SYSTEMS = (
    "raw-asyncpg",
    "sagakit-fastpath",
    "sagakit-fastpath-statements",
    "sagakit-inprocess",
    "sagakit-embedded",
    "sagakit-distributed",
    "dbos",
    "temporal",
    "sagaz",
)
#: Systems that are sagakit (the rest are peers, never needed by the tests).
SAGAKIT = tuple(s for s in ALL_SYSTEMS if s.startswith("sagakit"))


@dataclass(slots=True)
class BenchConfig:
    systems: list[str] = field(default_factory=lambda: list(ALL_SYSTEMS))
    concurrencies: list[int] = field(default_factory=lambda: [1, 16, 64, 256])
    duration: float = 8.0
    warmup: int = 50
    rate: float = 50.0
    #: A second open loop for sagakit's systems, at the rate the distributed mode's
    #: latency target names (0: none).
    fast_rate: float = 100.0
    open_duration: float = 10.0
    crash: bool = True
    crash_after: float = 3.0
    crash_concurrency: int = 32
    recover_timeout: float = 120.0
    out: Path = ROOT / "bench" / "results"
    pg: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    amqp: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    seed: int = 7
    #: Orders seeded per second of a run (an upper bound on any system's throughput).
    orders_per_second: int = 2500
    #: Seconds to let PostgreSQL's statistics catch up before and after a window.
    settle: float = 1.2
    #: Rounds of each head-to-head (bench/head_to_head.py); 0: none. Five, not three:
    #: one run's rounds spread from 1.38 to 2.48, and a median of three is one
    #: unlucky stretch away from either end.
    rounds: int = 5
    quick: bool = False

    @classmethod
    def quick_config(cls, **overrides: Any) -> BenchConfig:
        """The small version: one concurrency (16), runs of 1.5 s, no warm-up, a short
        open loop, and the crash column for the fused fast path only (bench/README.md)."""
        settings: dict[str, Any] = {
            "concurrencies": [16],
            "duration": 1.5,
            "warmup": 0,
            "rate": 20.0,
            "fast_rate": 0.0,
            "open_duration": 1.5,
            "crash_after": 1.5,
            "crash_concurrency": 16,
            "recover_timeout": 30.0,
            "settle": 0.3,
            "rounds": 0,
            "quick": True,
        }
        settings.update(overrides)
        return cls(**settings)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["out"] = str(self.out)
        return data


class Unavailable(Exception):
    """A system that cannot run here; the reason goes into the results."""


@dataclass(slots=True)
class Service:
    """A long-lived process of a system (a RabbitMQ service, the Temporal server)."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    ready: Callable[[], Awaitable[None]] | None = None
    process: asyncio.subprocess.Process | None = None


@dataclass(slots=True)
class Prepared:
    """A system set up for its runs."""

    system: str
    worker_db: str
    databases: list[str]
    seed_orders: Callable[[int, int], Awaitable[None]]
    check: Callable[[], Awaitable[workload.Verdict]]
    cleanup: Callable[[], Awaitable[None]]
    options: dict[str, Any] = field(default_factory=dict)
    services: list[Service] = field(default_factory=list)
    next_order: int = 1


# ---------------------------------------------------------------------------- workers


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT / "bench" / "src"), str(ROOT / "src"), env.get("PYTHONPATH", "")) if p
    )
    env.update(extra or {})
    return env


class Worker:
    """A ``bench.worker`` process and the line protocol to it."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self.process = process
        self.log = log

    @classmethod
    async def spawn(
        cls, prepared: Prepared, spec: dict[str, Any], log: Path, *, system: str | None = None
    ) -> Worker:
        argv = [
            sys.executable, "-m", "bench.worker",
            "--system", system or prepared.system,
            "--db", prepared.worker_db,
            "--options", json.dumps(prepared.options),
            "--spec", json.dumps(spec),
        ]  # fmt: skip
        with log.open("ab") as err:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                env=child_env(),
                cwd=ROOT,
                start_new_session=True,
            )
        return cls(process, log)

    @property
    def pid(self) -> int:
        return self.process.pid

    async def expect(self, event: str, timeout: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = await self.process.stdout.readline()
                if not line:
                    await self.process.wait()
                    raise RuntimeError(
                        f"worker exited ({self.process.returncode}) before {event!r}: "
                        f"{tail(self.log)}"
                    )
                text = line.decode(errors="replace")
                if text.startswith(PREFIX):
                    message: dict[str, Any] = json.loads(text[len(PREFIX) :])
                    if message.get("event") == event:
                        return message

    async def send(self, word: str) -> None:
        assert self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.process.stdin.write(word.encode() + b"\n")
            await self.process.stdin.drain()

    async def finish(self, timeout: float = 60) -> None:
        await self.send("exit")
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            kill(self.process)
            await self.process.wait()

    def kill(self) -> None:
        kill(self.process)


def kill(process: asyncio.subprocess.Process, sig: int = signal.SIGKILL) -> None:
    """Signal the process's whole group (it was started in a session of its own)."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)


def tail(path: Path, lines: int = 12) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


async def start_services(prepared: Prepared, logs: Path) -> None:
    for service in prepared.services:
        log = logs / f"{prepared.system}.{service.name}.log"
        with log.open("ab") as out:
            service.process = await asyncio.create_subprocess_exec(
                *service.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=child_env(service.env),
                cwd=ROOT,
                start_new_session=True,
            )
    for service in prepared.services:
        if service.ready is not None:
            await service.ready()
        if service.process is not None and service.process.returncode is not None:
            raise RuntimeError(f"{service.name} exited at start: {tail(logs / service.name)}")


async def stop_services(prepared: Prepared, *, sig: int = signal.SIGTERM) -> None:
    for service in prepared.services:
        if service.process is not None:
            kill(service.process, sig)
    for service in prepared.services:
        if service.process is None:
            continue
        try:
            await asyncio.wait_for(service.process.wait(), 15)
        except TimeoutError:
            kill(service.process)
            await service.process.wait()
        service.process = None


def service_pids(prepared: Prepared) -> dict[str, int]:
    pids = {}
    for service in prepared.services:
        if service.process is not None and service.process.returncode is None:
            pids[service.name] = service.process.pid
            for child in procs.descendants(service.process.pid):
                pids[f"{service.name}/{child}"] = child
    return pids


# ----------------------------------------------------------------------------- phases


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


# ------------------------------------------------------------------------------- main


async def run_system(
    system: str, cfg: BenchConfig, run_id: str, logs: Path, progress: report.Progress
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
    results: dict[str, Any], cfg: BenchConfig, run_id: str, logs: Path, progress: report.Progress
) -> dict[str, Any]:
    """A head-to-head for each target the sweep left close (bench/head_to_head.py)."""
    from bench import head_to_head

    calls = head_to_head.close_calls(results) if cfg.rounds else []
    progress.add(2 * (cfg.rounds + 1) * len(calls))  # a warm-up run each, then the rounds
    settled = {}
    for mode, peer, best in calls:
        work = head_to_head.head_to_head(cfg, (mode, peer), best, run_id, logs, progress)
        settled[report.pair_key(mode, peer)] = await guarded(work)
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
    with report.Progress(len(cfg.systems) * steps, show=show) as progress:
        try:
            for system in cfg.systems:
                results["systems"][system] = await run_system(system, cfg, run_id, logs, progress)
            settled = await _settle_close_calls(results, cfg, run_id, logs, progress)
            results["head_to_head"] = settled
        finally:
            await databases.drop_prefixed(cfg.pg, f"bench_{run_id}_")
    results["finished_at"] = time.time()
    results["targets"] = report.targets(results)
    report.write(results, cfg.out)
    return results
