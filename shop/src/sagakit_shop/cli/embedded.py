"""``sagakit demo``: the shop on the embedded default (SQLite, in-process messages), its
orders through the saga, then the check, reported as tables or one JSON object."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from sagakit.cli import console, fail, safe
from sagakit_shop.app import LOGS, hide_personal_data
from sagakit_shop.cli.dashboard import (
    AdminPortOption,
    ShowTokensOption,
    dashboard_port,
    dashboard_tokens,
    print_dashboard,
    trace_ids_for_the_dashboard,
)
from sagakit_shop.cli.options import ModeOption, OrderApiPortOption, check_mode

if TYPE_CHECKING:
    from sagakit.api import Token


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
        bool,
        typer.Option(
            "--serve/--no-serve",
            help="Keep the order API, the dashboard and the admin API up afterwards.",
        ),
    ] = False,
    port: OrderApiPortOption = 8000,
    admin_port: AdminPortOption = None,
    directory: Annotated[
        Path, typer.Option("--dir", help="Where the services keep their SQLite files.")
    ] = Path(".sagakit/shop"),
    gateway_outage: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=3600.0,
            help="Take the payment gateway down for this many seconds from the start: "
            "its circuit breaker opens and charges wait instead of failing.",
        ),
    ] = 0.0,
    gateway_url: Annotated[
        str | None,
        typer.Option(help="A payment gateway to call (by default one runs in-process)."),
    ] = None,
    carrier_url: Annotated[
        str | None,
        typer.Option(help="A carrier quote service to call (by default one runs in-process)."),
    ] = None,
    show_tokens: ShowTokensOption = False,
) -> None:
    """Run the shop on the embedded default: orders through the saga, then the check."""
    from sagakit.observe.logs import configure
    from sagakit_shop.demo import run_demo

    chosen = check_mode(mode)
    configure("quiet" if as_json else "story", also=LOGS)
    hide_personal_data()
    from sagakit.observe import tracing

    if not tracing.configure(service="shop-demo") and serve:
        trace_ids_for_the_dashboard()

    tokens, where = dashboard_tokens(directory / "tokens") if serve else ([], "")

    def serving(admin: str, orders_api: str, tokens: list[Token]) -> None:
        console.print()
        print_dashboard(admin, tokens, where=where, show=show_tokens)
        console.print(f"[bold]order API[/] docs: {orders_api}/docs   (Ctrl-C to stop)")

    result = asyncio.run(
        run_demo(
            directory,
            orders=orders,
            fail_rate=fail_rate,
            seed=seed,
            concurrency=concurrency,
            mode=chosen,
            serve=("127.0.0.1", port, dashboard_port(port, admin_port)) if serve else None,
            on_serving=serving,
            tokens=tokens or None,
            gateway_outage=gateway_outage,
            gateway_url=gateway_url,
            carrier_url=carrier_url,
        )
    )
    if as_json:
        console.print_json(json.dumps(result.summary))
    else:
        _report(result)
    if not result.report.ok or result.summary["in_flight"]:
        raise fail("the shop's books do not balance (see above)")


def _report(result: object) -> None:
    from sagakit_shop.demo import DemoResult

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
        checks.add_row(name, mark, safe("; ".join(result.report.violations[name][:3])))
    console.print(checks)
    breakers = Table(title="circuit breakers", title_justify="left", show_header=False)
    for name, breaker in summary["breakers"].items():
        deferred = f"{breaker['deferred']} step(s) deferred while open"
        breakers.add_row(name, breaker["state"], deferred)
    console.print(breakers)
    db = result.saga_db
    console.print(f"inspect: [bold]sagakit list --db {db}[/]")
    for sample in (result.sample_failed, result.sample_done):
        if sample:
            console.print(f"         [bold]sagakit show {sample} --db {db}[/]")
    keepers = " ".join(f"--db {url}" for url in result.breaker_dbs)
    console.print(f"         [bold]sagakit breakers {keepers}[/]", soft_wrap=True)
