"""``sagakit bench`` (and ``python -m bench``): run the benchmark and write its results."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from bench.runner import ALL_SYSTEMS, ROOT, BenchConfig, run_bench

if TYPE_CHECKING:
    from bench.shop_http import ShopHttpConfig

console = Console()


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def bench(
    quick: Annotated[
        bool, typer.Option("--quick", help="A small version in under two minutes.")
    ] = False,
    out: Annotated[Path, typer.Option(help="Where results go.")] = ROOT / "bench" / "results",
    systems: Annotated[
        str, typer.Option(help=f"Comma-separated, from: {', '.join(ALL_SYSTEMS)}.")
    ] = ",".join(ALL_SYSTEMS),
    concurrency: Annotated[
        str | None, typer.Option(help="Closed-loop concurrencies, e.g. 1,16,64,256.")
    ] = None,
    duration: Annotated[
        float | None, typer.Option(min=0.5, help="Seconds per closed-loop run.")
    ] = None,
    rate: Annotated[float | None, typer.Option(min=1, help="Open-loop sagas per second.")] = None,
    crash: Annotated[bool, typer.Option("--crash/--no-crash", help="Run the crash column.")] = True,
    db: Annotated[
        str, typer.Option("--db", envvar="BENCH_PG", help="PostgreSQL admin URL.")
    ] = "postgresql://postgres@127.0.0.1:5432/postgres",
    broker: Annotated[
        str, typer.Option(envvar="BENCH_AMQP", help="RabbitMQ URL.")
    ] = "amqp://guest:guest@127.0.0.1:5672/%2F",
    seed: Annotated[int, typer.Option(help="Seed for the orders (which fail).")] = 7,
    waiting: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Instead: start this many sagas that wait on an approval, and report the "
            "orchestrator's memory (the target: 100000 under 200 MB).",
        ),
    ] = None,
    shop_http: Annotated[
        bool,
        typer.Option(
            "--shop-http",
            help="Instead: the shop under `sagakit up`, orders posted over HTTP by a load "
            "generator, measured end to end and checked by `sagakit verify`.",
        ),
    ] = False,
    generator: Annotated[
        str, typer.Option(help="--shop-http: the HTTP load generator, wrk or hey.")
    ] = "wrk",
    connections: Annotated[
        int, typer.Option(min=1, max=1024, help="--shop-http: concurrent HTTP clients.")
    ] = 64,
    replicas: Annotated[
        str, typer.Option(help="--shop-http: processes per service, one run each, e.g. 1,2.")
    ] = "1",
    port: Annotated[
        int,
        typer.Option(min=1, max=65530, help="--shop-http: the order API's port (and the 4 after)."),
    ] = 18600,
) -> None:
    """Benchmark sagakit against DBOS, Temporal and sagaz on the same PostgreSQL."""
    if waiting is not None:
        _waiting(db, waiting, seed, out)
        return
    if shop_http:
        from bench.shop_http import ShopHttpConfig

        counts = [int(r) for r in _split(replicas)] if replicas.strip() else []
        if not counts or min(counts) < 1:
            raise typer.BadParameter("one or more counts of 1 or more", param_hint="--replicas")
        shop_cfg = ShopHttpConfig(
            pg=db, amqp=broker, generator=generator, connections=connections,
            duration=duration or 20.0, replicas=counts, port=port, out=out,
        )  # fmt: skip
        _shop_http(shop_cfg)
        return
    chosen = _split(systems)
    unknown = [s for s in chosen if s not in ALL_SYSTEMS]
    if unknown:
        raise typer.BadParameter(f"unknown system(s): {', '.join(unknown)}", param_hint="--systems")
    settings: dict[str, object] = {
        "systems": chosen, "out": out, "crash": crash, "pg": db, "amqp": broker, "seed": seed,
    }  # fmt: skip
    if concurrency:
        settings["concurrencies"] = [int(c) for c in _split(concurrency)]
    if duration:
        settings["duration"] = duration
    if rate:
        settings["rate"] = rate
    cfg = BenchConfig.quick_config(**settings) if quick else BenchConfig(**settings)  # type: ignore[arg-type]
    results = asyncio.run(run_bench(cfg))
    console.print((cfg.out / "results.md").read_text(), markup=False, highlight=False)
    console.print(f"[green]results in[/] {cfg.out}")
    failed = [
        system
        for system, entry in results["systems"].items()
        if system.startswith("sagakit")
        and any(not r.get("invariants", {}).get("passed", False) for r in entry.get("runs", []))
    ]
    if failed:
        raise typer.Exit(1)


#: The memory target: the orchestrator's resident set with 100,000 sagas waiting.
WAITING_RSS_MB = 200.0


def _waiting(db: str, count: int, seed: int, out: Path) -> None:
    from bench import waiting

    (out / "logs").mkdir(parents=True, exist_ok=True)
    results = {}
    ok = True
    for runtime in ("fused", "plain"):
        result = asyncio.run(waiting.measure(db, count, seed, out / "logs", runtime))
        results[runtime] = result
        holds = result["waiting"] == count and result["rss_mb"] < WAITING_RSS_MB
        ok = ok and holds
        console.print(
            f"{runtime} runtime: {result['waiting']:,} of {count:,} sagas waiting on an "
            f"approval; orchestrator RSS {result['rss_mb']:.1f} MB (peak "
            f"{result['peak_rss_mb']:.1f}, {result['rss_before_mb']:.1f} before the first "
            f"start); started at {result['starts_per_s']:,.0f}/s: "
            f"[{'green' if holds else 'red'}]{'holds' if holds else 'does not hold'}[/]"
        )
    (out / "waiting.json").write_text(json.dumps(results, indent=1))
    if not ok:
        raise typer.Exit(1)


def _shop_http(cfg: ShopHttpConfig) -> None:
    from bench import shop_http

    if cfg.generator not in shop_http.GENERATORS:
        choices = ", ".join(shop_http.GENERATORS)
        raise typer.BadParameter(f"choose one of {choices}", param_hint="--generator")
    missing = shop_http.missing_generator(cfg.generator)
    if missing:
        from sagakit.cli import fail

        raise fail(missing, 2)

    def say(line: str) -> None:
        console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {line}", soft_wrap=True)

    results = asyncio.run(shop_http.run_shop_http(cfg, say))
    markdown = shop_http.write(cfg, results)
    console.print(markdown.read_text(), markup=False, highlight=False)
    console.print(f"[green]results in[/] {cfg.out}")
    if not shop_http.holds(results):
        raise typer.Exit(1)


#: ``sagakit bench``; the ``sagakit.commands`` entry point ``bench`` adds it to ``sagakit``.
app = typer.Typer()
app.command("bench")(bench)
