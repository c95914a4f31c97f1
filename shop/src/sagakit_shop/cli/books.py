"""``sagakit verify``: check the shop's books (money, stock, once and terminal) across
every service's database, embedded or distributed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sagakit.cli import console, fail, safe
from sagakit_shop.cli.options import check_postgres


def verify(
    db: Annotated[
        str | None,
        typer.Option(
            "--db", envvar="SAGAKIT_DB", help="The distributed shop's PostgreSQL URL (stem)."
        ),
    ] = None,
    directory: Annotated[
        Path, typer.Option("--dir", help="The embedded shop's directory (when no --db).")
    ] = Path(".sagakit/shop"),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Check money, stock, once and terminal across every service's database."""
    from sagakit import SagaError
    from sagakit_shop.app import embedded_urls, open_stores
    from sagakit_shop.verify import verify as check

    if db is not None:
        check_postgres(db)
        from sagakit_shop.distributed import database_urls

        urls = database_urls(db)
    else:
        if not (directory / "saga.db").exists():
            raise fail(f"no shop in {directory} (run `sagakit demo` first, or give --db)")
        urls = embedded_urls(directory)

    async def go() -> object:
        stores = open_stores(urls)
        try:
            return await check(stores)
        finally:
            for store in stores.values():
                await store.close()

    try:
        report = asyncio.run(go())
    except SagaError as exc:
        raise fail(str(exc)) from exc
    from sagakit_shop.verify import Report

    assert isinstance(report, Report)
    if as_json:
        console.print_json(json.dumps(report.as_json()))
    else:
        table = Table(
            title=f"{report.orders} orders; sagas {dict(report.sagas)}",
            title_justify="left",
            show_header=False,
        )
        for name, holds in report.holds().items():
            table.add_row(
                name,
                "[green]holds[/]" if holds else "[bold red]VIOLATED[/]",
                safe("; ".join(report.violations[name][:3])),
            )
        console.print(table)
    if not report.ok:
        raise typer.Exit(1)
