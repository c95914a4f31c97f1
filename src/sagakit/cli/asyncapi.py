"""``sagakit asyncapi``: the wire protocol of some sagas as an AsyncAPI 3 document."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer

from sagakit.cli.app import app, console
from sagakit.model.definition import SagaDefinition


def load_definitions(spec: str) -> list[SagaDefinition]:
    """``module:NAME``, where NAME is a saga definition or a collection of them."""
    module_name, _, attribute = spec.partition(":")
    hint = "'--definitions'"
    if not module_name or not attribute:
        raise typer.BadParameter(f"{spec!r} is not MODULE:ATTR", param_hint=hint)
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise typer.BadParameter(f"cannot find {spec!r}: {exc}", param_hint=hint) from exc
    if isinstance(found, SagaDefinition):
        return [found]
    items = list(found) if isinstance(found, Iterable) and not isinstance(found, str) else []
    if not items or not all(isinstance(item, SagaDefinition) for item in items):
        raise typer.BadParameter(
            f"{spec!r} is neither a SagaDefinition nor a collection of them", param_hint=hint
        )
    return items


@app.command("asyncapi")
def asyncapi(
    definitions: Annotated[
        list[str],
        typer.Option(
            "--definitions",
            help="Sagas to describe, as MODULE:ATTR (e.g. sagakit_shop.saga:ORDER_SAGA); "
            "repeatable.",
        ),
    ],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write here instead of to stdout.")
    ] = None,
    group: Annotated[
        str, typer.Option(help="The orchestrator group whose reply queue they use.")
    ] = "orchestrator",
    host: Annotated[str, typer.Option(help="The broker's host:port.")] = "localhost:5672",
    prefix: Annotated[str, typer.Option(help="The transport's queue prefix, if any.")] = "",
) -> None:
    """Write the AsyncAPI 3 document (JSON) of these sagas' messages on RabbitMQ: each
    participant's command queue, the reply queue, delay tiers and dead letters, with the
    typed steps' models as message schemas (docs/protocol.md says the rest)."""
    from sagakit.asyncapi import document

    sagas = [saga for spec in definitions for saga in load_definitions(spec)]
    text = json.dumps(document(sagas, group=group, host=host, prefix=prefix), indent=2)
    if out is None:
        print(text)  # plain, so it can be piped into a file or another tool
        return
    out.write_text(text + "\n")
    console.print(f"[green]wrote[/] {out}")
