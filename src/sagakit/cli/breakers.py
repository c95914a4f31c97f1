"""``sagakit breakers``: the circuit breakers participants keep, and their state."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from sagakit.cli.app import JsonOption, app, console, emit_json, fail, open_existing
from sagakit.cli.render import iso, safe, when
from sagakit.engine.breakers import read_all
from sagakit.errors import SagaError

_STYLE = {"closed": "green", "open": "bold red", "half_open": "yellow"}


@app.command()
def breakers(
    db: Annotated[
        list[str],
        typer.Option(
            "--db",
            envvar="SAGAKIT_DB",
            help="A participant's store (repeat for several: each keeps its own breakers).",
        ),
    ],
    as_json: JsonOption = False,
) -> None:
    """Show each circuit breaker: closed, open (failing fast) or half-open (one trial)."""

    async def go() -> list[tuple[str, dict[str, object]]]:
        rows: list[tuple[str, dict[str, object]]] = []
        for url in db:
            store = open_existing(url)
            try:
                async with store.unit() as unit:
                    rows.extend((store.url_safe, row) for row in await read_all(unit))
            except SagaError as exc:
                raise fail(str(exc)) from exc
            finally:
                await store.close()
        return rows

    rows = asyncio.run(go())
    if as_json:
        emit_json(
            {
                "items": [
                    {
                        "store": store,
                        **row,
                        "opened_at": iso(_seconds(row["opened_at"])),
                        "updated_at": iso(_seconds(row["updated_at"])),
                    }
                    for store, row in rows
                ]
            }
        )
        return
    if not rows:
        console.print("no circuit breakers have been used")
        return
    table = Table(title="circuit breakers", title_justify="left", header_style="bold")
    for column in ("store", "breaker", "state", "recent failures", "opened", "updated"):
        table.add_column(column, no_wrap=column in {"breaker", "state"})
    for store, row in rows:
        state = str(row["state"])
        opened = row["opened_at"]
        table.add_row(
            safe(store),
            safe(row["name"]),
            Text(state, style=_STYLE.get(state, "")),
            str(row["failures"]),
            when(float(opened)) if isinstance(opened, float) else "-",
            when(float(row["updated_at"])),  # type: ignore[arg-type]
        )
    console.print(table)


def _seconds(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None
