"""The shop's commands in the ``sagakit`` CLI: demo (and, distributed: up, service,
order, verify)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sagakit.cli.app import app, console, fail
from shop.app import MODES

ModeOption = Annotated[
    str, typer.Option("--mode", help="orchestration (a coordinator) or choreography (events).")
]


@app.command()
def demo(
    orders: Annotated[int, typer.Option(min=1, max=100_000, help="How many orders.")] = 20,
    fail_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of orders set up to fail.")
    ] = 0.25,
    seed: Annotated[int, typer.Option(help="Seed for the orders and the trouble.")] = 7,
    concurrency: Annotated[int, typer.Option(min=1, max=1024, help="Orders placed at once.")] = 8,
    mode: ModeOption = "orchestration",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead.")] = False,
    serve: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Keep the order API up afterwards.")
    ] = False,
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port for --serve.")] = 8000,
    directory: Annotated[
        Path, typer.Option("--dir", help="Where the services keep their SQLite files.")
    ] = Path(".sagakit/shop"),
) -> None:
    """Run the shop on the embedded default: orders through the saga, then the check."""
    from sagakit.logs import configure
    from shop.demo import run_demo

    if mode not in MODES:
        raise typer.BadParameter(f"choose one of {', '.join(MODES)}", param_hint="'--mode'")
    configure("quiet" if as_json else "story")

    def serving(url: str) -> None:
        console.print(f"\n[bold]order API[/] at {url}/docs  (Ctrl-C to stop)")

    result = asyncio.run(
        run_demo(
            directory,
            orders=orders,
            fail_rate=fail_rate,
            seed=seed,
            concurrency=concurrency,
            mode=mode,  # checked against MODES above
            serve=("127.0.0.1", port) if serve else None,
            on_serving=serving,
        )
    )
    if as_json:
        console.print_json(json.dumps(result.summary))
    else:
        _report(result)
    if not result.report.ok or result.summary["in_flight"]:
        raise fail("the shop's books do not balance (see above)")


def _report(result: object) -> None:
    from shop.demo import DemoResult

    assert isinstance(result, DemoResult)
    summary = result.summary
    table = Table(title="orders", title_justify="left", show_header=False)
    for name in ("orders", "completed", "compensated", "needs_attention", "in_flight"):
        table.add_row(name, str(summary[name]))
    table.add_row("elapsed", f"{summary['elapsed_s']} s")
    table.add_row("throughput", f"{summary['sagas_per_s']} sagas/s")
    console.print()
    console.print(table)
    checks = Table(title="invariants", title_justify="left", show_header=False)
    for name, ok in summary["invariants"].items():
        mark = "[green]holds[/]" if ok else "[bold red]VIOLATED[/]"
        checks.add_row(name, mark, "; ".join(result.report.violations[name][:3]))
    console.print(checks)
    db = result.saga_db
    console.print(f"inspect: [bold]sagakit list --db {db}[/]")
    for sample in (result.sample_failed, result.sample_done):
        if sample:
            console.print(f"         [bold]sagakit show {sample} --db {db}[/]")
