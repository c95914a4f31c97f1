"""``sagakit``: migrate stores, list and inspect sagas, render definitions, run the demo."""

from __future__ import annotations

import asyncio
import functools
import json
import re
import sys
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from importlib.metadata import EntryPoint, entry_points
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from sagakit.errors import CorruptLogError, StoreError, UnknownSagaError
from sagakit.model.status import SagaStatus
from sagakit.observe.redaction import mask_urls, printable
from sagakit.ports import SagaRow
from sagakit.stores import open_store
from sagakit.stores.sql import SqlSagaStore
from sagakit.stores.sqlite import SqliteSagaStore

T = TypeVar("T")

DEFAULT_DB = "sqlite:///.sagakit/sagakit.db"

#: The entry-point group through which other distributions add commands to ``sagakit``
#: (the reference shop's ``demo``, ``up``, ``lab``, ``chaos``, ..., the benchmark's
#: ``bench``). Each entry names a ``typer.Typer`` whose commands and groups join sagakit's
#: own; a plain ``pip install sagakit`` has none, only the operator commands.
COMMANDS_GROUP = "sagakit.commands"

#: Click commands by name (typer's own copy of click, which it keeps private).
Commands = dict[str, Any]


def load_commands(entries: Iterable[EntryPoint]) -> Commands:
    """The commands the ``entries`` add, by name. An entry that fails to load is skipped
    with one line on stderr saying which and why: one broken part never hides sagakit's
    own commands or another part's. sagakit's own commands keep their names."""
    found: Commands = {}
    for entry in sorted(entries, key=lambda e: e.name):
        origin = f"{entry.name!r} commands ({entry.value}"
        origin += f", from {entry.dist.name})" if entry.dist is not None else ")"
        try:
            commands = entry.load()
        except Exception as exc:
            say_error(f"skipped the {origin}: {type(exc).__name__}: {exc}")
            continue
        if not isinstance(commands, typer.Typer):
            say_error(f"skipped the {origin}: a {type(commands).__name__}, not a typer.Typer")
            continue
        for name, command in typer.main.get_group(commands).commands.items():
            found.setdefault(name, command)
    return found


@functools.cache
def installed_commands() -> Commands:
    """The commands of every installed distribution's entry in :data:`COMMANDS_GROUP`,
    loaded once per process."""
    return load_commands(entry_points(group=COMMANDS_GROUP))


class SagakitGroup(TyperGroup):
    """The ``sagakit`` command: its own commands and the installed ones. They are loaded
    when the command is built to run (not when this module is imported), so a part's
    modules may import ``sagakit.cli`` without a cycle."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        for name, command in installed_commands().items():
            self.commands.setdefault(name, command)


app = typer.Typer(
    name="sagakit",
    help="Distributed transactions with sagas: run, inspect and operate them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=SagakitGroup,
)
console = Console()
errors = Console(stderr=True)

DbOption = Annotated[
    str,
    typer.Option(
        "--db",
        envvar="SAGAKIT_DB",
        help="Store URL: sqlite:///path/file.db or postgresql://user@host/db.",
    ),
]


def say_error(message: str) -> None:
    """One line on stderr, however wide the terminal or whether there is one: the text
    as it is (no markup read from it), URLs' passwords masked, control characters
    escaped."""
    line = printable(mask_urls(" ".join(message.split())))
    errors.print(Text.assemble(("error:", "bold red"), " ", line), soft_wrap=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    say_error(message)
    return typer.Exit(code)


def emit_json(value: object) -> None:
    """``--json``: one JSON document on stdout, nothing else."""
    sys.stdout.write(json.dumps(value, default=str) + "\n")


def _open(db: str) -> SqlSagaStore:
    try:
        return open_store(db)
    except ValueError as exc:
        raise fail(str(exc), 2) from exc


def open_existing(db: str) -> SqlSagaStore:
    """The store at ``db``, refusing a SQLite path with no file (a typo in a path should
    not look like an empty store)."""
    store = _open(db)
    if isinstance(store, SqliteSagaStore) and not store.path.exists():
        raise fail(f"no sagakit store at {store.path} (run a saga or `sagakit migrate` first)")
    return store


def with_store(
    db: str, work: Callable[[SqlSagaStore], Awaitable[T]], *, existing: bool = True
) -> T:
    """Open the store at ``db``, run ``work`` on it, close it; store errors end the
    command with a clear message instead of a traceback.

    With ``existing``, a SQLite file must already be there (a typo in a path should not
    look like an empty store) and a PostgreSQL database must already be migrated.
    """
    store = open_existing(db) if existing else _open(db)

    async def go() -> T:
        try:
            if existing and not await store.is_migrated():
                raise fail(
                    f"{store.url_safe} has no sagakit tables yet; run `sagakit migrate --db ...`"
                )
            return await work(store)
        except StoreError as exc:
            raise fail(str(exc)) from exc
        finally:
            await store.close()

    return asyncio.run(go())


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)$")


def parse_since(value: str | None) -> float | None:
    """``10m``, ``2h``, ``1d`` ago, or an ISO-8601 time (UTC unless it says otherwise)."""
    if value is None:
        return None
    match = _DURATION.match(value.strip())
    if match:
        amount, unit = float(match.group(1)), match.group(2)
        seconds = amount * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
        return (datetime.now(UTC) - timedelta(seconds=seconds)).timestamp()
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(
            f"{value!r} is neither a duration like 10m/2h/1d nor an ISO-8601 time",
            param_hint="'--since'",
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@app.command()
def migrate(db: DbOption = DEFAULT_DB) -> None:
    """Create or upgrade sagakit's tables in a store."""

    async def go(store: SqlSagaStore) -> str:
        await store.migrate()
        return store.url_safe

    console.print(f"[green]migrated[/] {with_store(db, go, existing=False)}")


JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON document (times in ISO 8601, UTC).")
]

StatusOption = Annotated[
    SagaStatus | None, typer.Option("--status", "-s", help="Only sagas in this status.")
]


@app.command("list")
def list_sagas(
    db: DbOption = DEFAULT_DB,
    status: StatusOption = None,
    definition: Annotated[
        str | None, typer.Option("--definition", "-d", help="Only this saga definition.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Only sagas updated since: 10m, 2h, 1d, or an ISO-8601 time."),
    ] = None,
    key: Annotated[str | None, typer.Option(help="Only the saga with this business key.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many rows.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """List sagas, newest first, with their status and current step."""
    from sagakit.cli.render import saga_json, saga_table

    since_at = parse_since(since)

    async def go(store: SqlSagaStore) -> tuple[list[SagaRow], dict[str, int]]:
        rows = await store.list_sagas(
            status=status.value if status else None,
            definition=definition,
            since=since_at,
            key=key,
            limit=limit,
        )
        return rows, await store.count_by_status()

    rows, counts = with_store(db, go)
    if as_json:
        emit_json({"items": [saga_json(row) for row in rows], "counts": counts})
        return
    if not rows:
        console.print("no sagas match")
        return
    console.print(saga_table(rows), soft_wrap=True)
    summary = ", ".join(f"{name} {count}" for name, count in sorted(counts.items()))
    console.print(f"[dim]{len(rows)} shown; in the store: {summary}[/]")


@app.command()
def show(
    saga_id: Annotated[str, typer.Argument(help="The saga's id, or a unique start of it.")],
    db: DbOption = DEFAULT_DB,
    as_json: JsonOption = False,
) -> None:
    """Show one saga's timeline: every event, its time from the start, and its outcome."""
    from sagakit.cli.render import timeline, timeline_json

    async def go(store: SqlSagaStore) -> None:
        try:
            full_id = await store.resolve(saga_id)
        except UnknownSagaError as exc:
            raise fail(str(exc)) from exc
        try:
            events = await store.history(full_id)
        except UnknownSagaError:
            events = []
        state, error = None, None
        try:
            state = await store.get(full_id)
        except CorruptLogError as exc:
            error = exc
        if as_json:
            emit_json(timeline_json(full_id, events, state, error))
        else:
            console.print(timeline(full_id, events, state, error))
        if error is not None:
            raise typer.Exit(2)

    with_store(db, go)


def _load_cli_modules() -> None:
    from sagakit.cli import asyncapi, breakers, broker, dlq, operate, rules, run  # noqa: F401 - they register commands


_load_cli_modules()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
