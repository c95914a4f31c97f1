"""Results: the JSON file and the Markdown tables; the plots (:mod:`bench.plots`), the
targets (:mod:`bench.targets`) and the progress bar (:mod:`bench.progress`) have
modules of their own."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from bench.plots import plots
from bench.progress import Progress
from bench.targets import (
    DISTRIBUTED_CLOSED,
    DISTRIBUTED_OPEN_P50_MS,
    DISTRIBUTED_OPEN_P99_MS,
    DISTRIBUTED_VS_DBOS,
    IN_PROCESS,
    PEER_TARGETS,
    RAW_SHARE,
    REST_P50_MS,
    STEPS,
    best,
    crash_passed,
    pair_key,
    targets,
)

__all__ = [
    "DISTRIBUTED_CLOSED",
    "DISTRIBUTED_OPEN_P50_MS",
    "DISTRIBUTED_OPEN_P99_MS",
    "DISTRIBUTED_VS_DBOS",
    "IN_PROCESS",
    "PEER_TARGETS",
    "RAW_SHARE",
    "REST_P50_MS",
    "RUN_KEYS",
    "STEPS",
    "Progress",
    "best",
    "crash_passed",
    "machine",
    "markdown",
    "pair_key",
    "plots",
    "targets",
    "write",
]

#: The keys every closed- or open-loop run carries in results.json.
RUN_KEYS = (
    "mode", "concurrency", "rate", "completed", "errors", "throughput", "p50_ms", "p95_ms",
    "p99_ms", "commits_per_saga", "cpu_ms_per_saga", "peak_rss_mb", "invariants", "cdf_ms",
)  # fmt: skip


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    return str(value)


def _rss(run: dict[str, Any]) -> str:
    rss = run.get("peak_rss_mb") or {}
    return ", ".join(f"{k} {v:.0f}" for k, v in rss.items() if "/" not in k) or "-"


def markdown(results: dict[str, Any]) -> str:
    lines = [
        f"# Benchmark results ({results['run_id']})",
        "",
        f"Machine: {results['machine']['cpus']} CPUs, Python {results['machine']['python']}. "
        f"Quick: {results['config']['quick']}. Seed {results['config']['seed']}.",
        "",
        "## Closed loop (throughput)",
        "",
        "| system | concurrency | sagas/s | p50 ms | p95 ms | p99 ms | commits/saga "
        "| CPU ms/saga | peak RSS MB | invariants |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    skipped = []
    for system, entry in results["systems"].items():
        if "skipped" in entry:
            skipped.append(f"- **{system}** skipped: {entry['skipped']}")
            continue
        lines.extend(_row(system, r, str(r.get("concurrency", "-"))) for r in entry.get("runs", []))
    lines += ["", "(raw-asyncpg: one single-row commit per unit, so its sagas/s is commits/s.)"]
    lines += ["", "## Open loop (latency at a fixed arrival rate)", ""]
    lines += [
        "| system | rate/s | sagas/s | p50 ms | p95 ms | p99 ms | commits/saga "
        "| CPU ms/saga | peak RSS MB | invariants |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for system, entry in results["systems"].items():
        for key in ("open", "open_fast"):
            run = entry.get(key)
            if run:
                lines.append(_row(system, run, _fmt(run.get("rate"))))
    lines += ["", "## Latency at rest (one saga at a time)", ""]
    lines += ["| system | p50 ms | p95 ms | p99 ms | sagas/s |", "|---|---:|---:|---:|---:|"]
    for system, entry in results["systems"].items():
        for run in entry.get("runs", []):
            if run.get("concurrency") == 1 and "error" not in run and system != "raw-asyncpg":
                lines.append(
                    f"| {system} | {_fmt(run['p50_ms'])} | {_fmt(run['p95_ms'])} "
                    f"| {_fmt(run['p99_ms'])} | {_fmt(run['throughput'])} |"
                )
    lines += ["", "## Crash column (SIGKILL mid-run, restart, own recovery)", ""]
    lines += [
        "| system | passed | in flight at kill | recovery s | detail |",
        "|---|---|---:|---:|---|",
    ]
    for system, entry in results["systems"].items():
        crash = entry.get("crash")
        if not crash:
            continue
        if "error" in crash:
            lines.append(f"| {system} | error | - | - | {crash['error'][:200]} |")
            continue
        lines.append(
            f"| {system} | {'yes' if crash['passed'] else 'NO'} | {crash['in_flight_at_kill']} "
            f"| {crash['recovery_s']} | {crash['summary']} |"
        )
    lines += _head_to_head(results)
    lines += ["", "## Targets", "", "| target | measured | want | holds | note |"]
    lines += ["|---|---:|---:|---|---|"]
    for t in results.get("targets", []):
        lines.append(
            f"| {t['target']} | {_fmt(t['measured'])} | {_fmt(t['want'])} "
            f"| {'yes' if t['holds'] else 'no'} | {t['note']} |"
        )
    if skipped:
        lines += ["", "## Not run", "", *skipped]
    return "\n".join(lines) + "\n"


def _head_to_head(results: dict[str, Any]) -> list[str]:
    settled = results.get("head_to_head") or {}
    if not settled:
        return []
    lines = ["", "## Head to head (close calls, measured in turns)", ""]
    lines += ["| pair | round | order | first sagas/s | second sagas/s | ratio |"]
    lines += ["|---|---:|---|---:|---:|---:|"]
    for name, entry in settled.items():
        if "error" in entry:
            lines.append(f"| {name} | - | error: {entry['error'][:160]} | | | |")
            continue
        first, second = entry["pair"]
        for number, r in enumerate(entry["rounds"], start=1):
            lines.append(
                f"| {name} | {number} | {' then '.join(r['order'])} "
                f"| {_fmt(r[first].get('throughput'))} | {_fmt(r[second].get('throughput'))} "
                f"| {_fmt(r.get('ratio'))} |"
            )
        lines.append(f"| {name} | median | | | | **{_fmt(entry['ratio'])}** |")
    return lines


def _row(system: str, run: dict[str, Any], where: str) -> str:
    if "error" in run:
        return f"| {system} | {where} | error: {run['error'][:160]} | | | | | | | |"
    inv = run["invariants"]
    verdict = (
        "pass"
        if inv["passed"]
        else "FAIL " + ", ".join(f"{k}={v}" for k, v in inv["violations"].items() if v)
    )
    if run.get("errors"):
        verdict += f"; {run['errors']} errors"
    return (
        f"| {system} | {where} | {_fmt(run['throughput'])} | {_fmt(run['p50_ms'])} "
        f"| {_fmt(run['p95_ms'])} | {_fmt(run['p99_ms'])} | {_fmt(run['commits_per_saga'])} "
        f"| {_fmt(run['cpu_ms_per_saga'])} | {_rss(run)} | {verdict} |"
    )


def write(results: dict[str, Any], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "markdown": out / "results.md"}
    paths["json"].write_text(json.dumps(results, indent=1))
    paths["markdown"].write_text(markdown(results))
    try:
        made = plots(results, out)
    except ImportError:  # matplotlib is in the bench extra; the tables do without it
        made = []
    for path in made:
        paths[path.stem] = path
    return paths
