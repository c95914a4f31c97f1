"""The shop-over-HTTP run's report: ``shop_http.json``, and ``shop_http.md`` with a
table of the runs and one of the CPU time each process spent per order."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.shop_http_config import ShopHttpConfig

HEADER = (
    "| replicas | POST/s | POST p50 / p90 / p99 ms | HTTP errors | orders | e2e orders/s "
    "| e2e p50 / p99 ms | not ended | verify | load before / after |"
)


def table(results: Sequence[dict[str, Any]]) -> str:
    """The runs as a Markdown table."""
    lines = [HEADER, "|" + "---|" * (HEADER.count("|") - 1)]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['replicas']} | {r['error']} |")
            continue
        http, e2e = r["http"], r["end_to_end"]
        load = f"{r['load_average_before'][0]:.2f} / {r['load_average'][0]:.2f}"
        lines.append(
            f"| {r['replicas']} | {http['per_s']:,.0f} "
            f"| {http['p50_ms']:.0f} / {http['p90_ms']:.0f} / {http['p99_ms']:.0f} "
            f"| {http['errors']} | {e2e['orders']:,} | {e2e['e2e_per_s']:,.0f} "
            f"| {e2e['e2e_p50_ms']:,.0f} / {e2e['e2e_p99_ms']:,.0f} | {e2e['not_ended']} "
            f"| {'holds' if r['verify'].get('holds') else 'FAILS'} | {load} |"
        )
    return "\n".join(lines)


def write(cfg: ShopHttpConfig, results: Sequence[dict[str, Any]]) -> Path:
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "shop_http.json").write_text(json.dumps(list(results), indent=1))
    markdown = cfg.out / "shop_http.md"
    what = (
        f"The shop under `sagakit up`: {cfg.generator}, {cfg.connections} clients posting "
        f"orders for {cfg.duration:.0f} s, per replica count."
    )
    markdown.write_text(f"{what}\n\n{table(results)}\n\n{cpu_table(results)}\n")
    return markdown


def cpu_table(results: Sequence[dict[str, Any]]) -> str:
    """CPU milliseconds per order of each process, a row per replica count (replicas of
    a kind summed)."""
    kinds: dict[int, Counter[str]] = {}
    for r in results:
        if "error" in r:
            continue
        summed: Counter[str] = Counter()
        for name, ms in r.get("cpu_ms_per_order", {}).items():
            summed[name.split("-")[0]] += ms
        kinds[r["replicas"]] = summed
    names = sorted({n for summed in kinds.values() for n in summed})
    if not names:
        return ""
    header = "| CPU ms per order | " + " | ".join(names) + " | all |"
    lines = [header, "|" + "---|" * (len(names) + 2)]
    for replicas, summed in kinds.items():
        cells = " | ".join(f"{summed[n]:.1f}" for n in names)
        lines.append(f"| {replicas} replica(s) | {cells} | {sum(summed.values()):.1f} |")
    return "\n".join(lines)


def holds(results: Sequence[dict[str, Any]]) -> bool:
    """Every run's books balance and every saga ended."""
    return all(
        "error" not in r and r["verify"].get("holds") and not r["end_to_end"]["not_ended"]
        for r in results
    )
