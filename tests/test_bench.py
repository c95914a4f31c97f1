"""The benchmark's sagakit side, at its smallest: it runs, the invariants hold, the crash
column passes, and the results carry the keys bench/README.md documents."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import PG_ADMIN, create_pg_database, drop_pg_database

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture
async def reachable_postgres() -> str:
    # The bench makes databases of its own; this only proves the server answers (or
    # skips, or fails in CI, as every PostgreSQL test does).
    await drop_pg_database(await create_pg_database())
    return PG_ADMIN


async def test_the_smallest_bench_runs_and_reports(tmp_path: Path, reachable_postgres: str) -> None:
    from bench.report import RUN_KEYS
    from bench.runner import BenchConfig, run_bench

    cfg = BenchConfig(
        systems=["sagakit-fastpath", "sagakit-embedded"],
        concurrencies=[4],
        duration=0.5,
        warmup=0,
        rate=20.0,
        open_duration=0.5,
        crash=True,
        crash_after=0.8,
        crash_concurrency=8,
        recover_timeout=30.0,
        settle=0.3,
        orders_per_second=400,
        quick=True,
        out=tmp_path,
        pg=reachable_postgres,
    )
    cfg_quick_crash = ("sagakit-fastpath",)
    results = await run_bench(cfg, show=False)

    for system in cfg.systems:
        entry = results["systems"][system]
        assert "skipped" not in entry, entry
        for run in [*entry["runs"], entry["open"]]:
            assert "error" not in run, run
            assert set(RUN_KEYS) <= set(run)
            assert run["completed"] > 0
            assert run["errors"] == 0
            assert run["invariants"]["passed"], run["invariants"]
            assert run["p50_ms"] <= run["p95_ms"] <= run["p99_ms"]
    fast = results["systems"]["sagakit-fastpath"]["runs"][0]
    assert fast["commits_per_saga"] is not None
    assert fast["commits_per_saga"] > 0
    for system in cfg_quick_crash:
        crash = results["systems"][system]["crash"]
        assert crash["passed"], crash

    written = json.loads((tmp_path / "results.json").read_text())
    assert {"run_id", "config", "machine", "systems", "targets"} <= set(written)
    table = (tmp_path / "results.md").read_text()
    assert "| system | concurrency | sagas/s |" in table
    assert "## Crash column" in table
    if importlib.util.find_spec("matplotlib") is not None:  # plots come with the bench extra
        assert (tmp_path / "throughput.png").stat().st_size > 0
        assert (tmp_path / "latency_cdf.png").stat().st_size > 0


async def test_waiting_sagas_are_held_by_the_store_not_the_orchestrator(
    tmp_path: Path, reachable_postgres: str
) -> None:
    from bench.waiting import measure

    for runtime in ("fused", "plain"):
        result = await measure(reachable_postgres, 20_000, 7, tmp_path, runtime)
        assert result["waiting"] == 20_000
        assert result["statuses"] == {"running": 20_000}
        # Everything a waiting saga is lives in the database: 20,000 of them cost the
        # process far less than even a small state each (1.5 KB would be 30 MB).
        assert result["rss_mb"] - result["rss_before_mb"] < 30


async def test_a_head_to_head_measures_the_pair_in_turns_on_fresh_databases(
    tmp_path: Path, reachable_postgres: str
) -> None:
    from bench.head_to_head import head_to_head
    from bench.report import Progress
    from bench.runner import BenchConfig

    cfg = BenchConfig(duration=0.5, warmup=0, settle=0.3, orders_per_second=400, rounds=3,
                      out=tmp_path, pg=reachable_postgres)  # fmt: skip
    pair = ("sagakit-fastpath", "sagakit-embedded")
    logs = tmp_path / "logs"
    logs.mkdir()
    with Progress(6, show=False) as progress:
        settled = await head_to_head(
            cfg, pair, {"sagakit-fastpath": 8, "sagakit-embedded": 4}, "h2h", logs, progress
        )

    rounds = settled["rounds"]
    assert [r["order"] for r in rounds] == [list(pair), list(pair[::-1]), list(pair)]
    for r in rounds:
        fast, embedded = r["sagakit-fastpath"], r["sagakit-embedded"]
        assert fast["passed"] and embedded["passed"], r
        assert (fast["concurrency"], embedded["concurrency"]) == (8, 4)
        assert r["ratio"] == round(fast["throughput"] / embedded["throughput"], 3)
    assert settled["ratio"] == sorted(r["ratio"] for r in rounds)[1]
    # Its databases are gone with it.
    conn = await asyncpg.connect(reachable_postgres)
    try:
        left = await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE 'bench_h2h_%'")
    finally:
        await conn.close()
    assert left == []
