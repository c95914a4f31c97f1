"""``sagakit rules``: check a rule file (with a dry run), publish it, show what is live."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sagakit.cli.app import DEFAULT_DB, DbOption, app, console, fail, with_store
from sagakit.cli.render import safe
from sagakit.engine.rules import RuleError, RuleSet, publish
from sagakit.model.definition import SagaDefinition
from sagakit.stores.sql import SqlSagaStore

rules_app = typer.Typer(
    help="Routing rules: which steps run, decided at run time.", no_args_is_help=True
)
app.add_typer(rules_app, name="rules")

DefinitionOption = Annotated[
    str | None,
    typer.Option(
        "--definition",
        help="The saga definition to check step names against, as module:NAME "
        "(e.g. sagakit_shop.saga:ORDER_SAGA).",
    ),
]
FileArgument = Annotated[
    Path, typer.Argument(help="The rule file (TOML).", exists=True, dir_okay=False)
]


def load_definition(spec: str | None) -> SagaDefinition | None:
    if spec is None:
        return None
    module_name, _, attribute = spec.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise typer.BadParameter(
            f"cannot find {spec!r}: {exc}", param_hint="'--definition'"
        ) from exc
    if not isinstance(found, SagaDefinition):
        raise typer.BadParameter(f"{spec!r} is not a SagaDefinition", param_hint="'--definition'")
    return found


def read(path: Path, definition: SagaDefinition | None) -> RuleSet:
    try:
        return RuleSet.parse(path.read_text(), source=str(path), definition=definition)
    except RuleError as exc:
        raise fail(str(exc)) from exc


@rules_app.command("check")
def check(file: FileArgument, definition: DefinitionOption = None) -> None:
    """Validate a rule file and dry-run it against the samples it carries."""
    saga = load_definition(definition)
    rules = read(file, saga)
    what = f"{len(rules.rules)} rule(s) for saga {rules.saga!r}, version {rules.version}"
    console.print(f"[green]valid[/]: {what}")
    if saga is None:
        console.print("[yellow]step names not checked[/] (give --definition module:NAME)")
        return
    for sample in rules.samples:
        table = Table(title=f"sample: {sample.name}", title_justify="left", header_style="bold")
        for column in ("step", "verdict", "because"):
            table.add_column(column)
        for step, verdict, because in rules.plan(saga, sample.data):
            style = {"run": "green", "skip": "yellow", "error": "bold red"}[verdict]
            table.add_row(safe(step), safe(verdict, style), safe(because))
        console.print(table)
    if not rules.samples:
        console.print("[dim]no [[sample]] tables in the file: nothing to dry-run[/]")


@rules_app.command("publish")
def publish_rules(
    file: FileArgument, db: DbOption = DEFAULT_DB, definition: DefinitionOption = None
) -> None:
    """Publish a rule set; sagas that start from now on run under it."""
    rules = read(file, load_definition(definition))

    async def go(store: SqlSagaStore) -> None:
        try:
            async with store.unit() as unit:
                await publish(unit, rules)
        except RuleError as exc:
            raise fail(exc.reason) from exc

    with_store(db, go)
    console.print(f"[green]published[/] rules v{rules.version} for saga {rules.saga!r}")


@rules_app.command("show")
def show_rules(db: DbOption = DEFAULT_DB) -> None:
    """List the published rule sets."""
    from sagakit.cli.render import when

    async def go(store: SqlSagaStore) -> list[tuple[str, int, float]]:
        async with store.unit() as unit:
            return await unit.records.rules.published()

    rows = with_store(db, go)
    if not rows:
        console.print("no rules published")
        return
    table = Table(title="published rules", title_justify="left", header_style="bold")
    for column in ("saga", "version", "published"):
        table.add_column(column)
    for saga, version, at in rows:
        table.add_row(safe(saga), str(version), when(at))
    console.print(table)
