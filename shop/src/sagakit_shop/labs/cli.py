"""``sagakit lab list`` and ``sagakit lab run N [--json] [--dir PATH]``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from sagakit import StoreError
from sagakit.cli import console, fail

lab_app = typer.Typer(
    name="lab",
    help="Runnable labs: each replays one classic saga lesson on the shop's real pieces.",
    no_args_is_help=True,
)
#: ``sagakit lab``; the ``sagakit.commands`` entry point ``lab`` adds it to ``sagakit``.
app = typer.Typer()
app.add_typer(lab_app, name="lab")

#: Labs are numbered 1..LAST.
LAST = 10


@lab_app.command("list")
def list_labs() -> None:
    """List the labs and what each teaches."""
    from sagakit_shop.labs.registry import LABS

    out = Table(title="saga labs", title_justify="left", header_style="bold")
    for column in ("#", "lab", "lesson"):
        out.add_column(column, no_wrap=column == "#")
    for lab in LABS.values():
        out.add_row(str(lab.number), lab.title, lab.lesson)
    console.print(out)
    console.print("[dim]run one: sagakit lab run N  (--json for its figures only)[/]")


@lab_app.command("run")
def run_lab(
    number: Annotated[int, typer.Argument(min=1, max=LAST, help="Which lab (1-10).")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object of its figures instead.")
    ] = False,
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir", help="Where the lab keeps its SQLite files (default .sagakit/labs/N)."
        ),
    ] = None,
) -> None:
    """Run one lab: the story as it happens, then its key figures."""
    from sagakit.observe.logs import configure
    from sagakit_shop.app import LOGS
    from sagakit_shop.labs.registry import LABS

    lab = LABS[number]
    where = directory if directory is not None else Path(".sagakit/labs") / str(number)
    configure("quiet" if as_json else "story", also=LOGS)
    if not as_json:
        console.print(f"[bold]lab {number}: {lab.title}[/]\n[dim]{lab.lesson}[/]\n")
    try:
        figures = asyncio.run(lab.run(where, story=not as_json))
    except (TimeoutError, StoreError) as exc:
        raise fail(f"lab {number} could not finish: {exc}") from exc
    if as_json:
        typer.echo(json.dumps(figures))
    else:
        _report(figures, where / "saga.db" if lab.saga_log else None)
    if figures.get("problems"):
        raise fail(f"lab {number} did not go as the lesson says: {'; '.join(figures['problems'])}")


def _report(figures: dict[str, Any], saga_db: Path | None) -> None:
    out = Table(title="figures", title_justify="left", show_header=False)
    out.add_column(no_wrap=True)
    out.add_column(overflow="fold")
    for name, value in figures.items():
        if name != "problems":
            out.add_row(name, _cell(value))
    console.print()
    console.print(out)
    if saga_db is not None and saga_db.exists():
        console.print(f"inspect: [bold]sagakit list --db sqlite:///{saga_db}[/]")


def _cell(value: Any) -> str:
    """A figure as a table cell: one line per item of a list, ``key=value`` for a dict."""
    if isinstance(value, list):
        return "\n".join(_cell(item) for item in value) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{key}={_cell(item)}" for key, item in value.items())
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
