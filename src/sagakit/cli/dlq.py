"""``sagakit dlq``: list, show, replay and purge dead letters, embedded or on RabbitMQ."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from sagakit.cli.app import DEFAULT_DB, DbOption, JsonOption, app, console, emit_json, fail
from sagakit.cli.operate import WhoOption, record_cli
from sagakit.cli.render import SHORT_ID, iso, safe, when
from sagakit.errors import SagaError
from sagakit.observe.redaction import redact_json
from sagakit.ports import DeadLetter, DeadLetterQueue

T = TypeVar("T")

dlq = typer.Typer(
    help="Dead letters: messages set aside with the reason they could not be handled.",
    no_args_is_help=True,
)
app.add_typer(dlq, name="dlq")

BrokerOption = Annotated[
    str | None,
    typer.Option(
        "--broker",
        envvar="SAGAKIT_BROKER",
        help="RabbitMQ URL (amqp://...). Without it, the embedded dead letters in --db.",
    ),
]


def with_dead_letters(
    db: str, broker: str | None, work: Callable[[DeadLetterQueue], Awaitable[T]]
) -> T:
    """Run ``work`` on the dead-letter queue of the broker, or of the embedded store."""

    async def go() -> T:
        if broker:
            from sagakit.transports import open_transport

            try:
                transport = open_transport(broker)
            except ValueError as exc:
                raise fail(str(exc), 2) from exc
            try:
                await transport.start()
                return await work(transport.dead_letters)
            except SagaError as exc:
                raise fail(str(exc)) from exc
            finally:
                await transport.close()
        from sagakit.cli.app import open_existing
        from sagakit.stores.dead_letters import SqlDeadLetters

        store = open_existing(db)
        try:
            return await work(SqlDeadLetters(store))
        except SagaError as exc:
            raise fail(str(exc)) from exc
        finally:
            await store.close()

    return asyncio.run(go())


def letter_json(letter: DeadLetter) -> dict[str, object]:
    """A dead letter for ``--json``: as the admin API shows it (hidden fields masked)."""
    return {
        "id": letter.id,
        "queue": letter.queue,
        "reason": letter.reason,
        "detail": letter.detail,
        "attempts": letter.attempts,
        "dead_at": iso(letter.dead_at),
        "message_id": letter.message.message_id,
        "headers": dict(letter.message.headers),
        "body": redact_json(letter.message.body),
    }


async def _resolve(queue: DeadLetterQueue, prefix: str) -> DeadLetter:
    try:
        return await queue.get(prefix)
    except LookupError:
        pass
    found = [letter for letter in await queue.list(limit=100_000) if letter.id.startswith(prefix)]
    if len(found) == 1:
        return found[0]
    if found:
        listed = ", ".join(letter.id for letter in found[:10])
        more = f" and {len(found) - 10} more" if len(found) > 10 else ""
        raise fail(f"{prefix!r} is the start of several dead letter ids: {listed}{more}")
    raise fail(f"no dead letter with id {prefix!r}")


@dlq.command("list")
def list_letters(
    db: DbOption = DEFAULT_DB,
    broker: BrokerOption = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="At most this many.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """List dead letters, oldest first, with the reason each was set aside."""

    async def go(queue: DeadLetterQueue) -> tuple[list[DeadLetter], int]:
        return await queue.list(limit=limit), await queue.depth()

    letters, depth = with_dead_letters(db, broker, go)
    if as_json:
        emit_json({"items": [letter_json(letter) for letter in letters], "depth": depth})
        return
    if not letters:
        console.print("no dead letters")
        return
    table = Table(title="dead letters", title_justify="left", header_style="bold")
    for column in ("id", "reason", "queue", "type", "saga", "tries", "dead at", "detail"):
        table.add_column(column, no_wrap=column in {"id", "reason", "dead at"})
    for letter in letters:
        headers = letter.message.headers
        table.add_row(
            safe(letter.id[:SHORT_ID]),
            safe(letter.reason),
            safe(letter.queue),
            safe(headers.get("type", "")),
            safe(headers.get("saga_id", "")),
            str(letter.attempts),
            when(letter.dead_at),
            safe(letter.detail[:80]),
        )
    console.print(table)
    console.print(f"[dim]{len(letters)} shown of {depth}[/]")


@dlq.command("show")
def show_letter(
    letter_id: Annotated[str, typer.Argument(help="The dead letter's id, or a unique start.")],
    db: DbOption = DEFAULT_DB,
    broker: BrokerOption = None,
) -> None:
    """Show one dead letter: why, from where, its headers and its body."""

    async def go(queue: DeadLetterQueue) -> DeadLetter:
        return await _resolve(queue, letter_id)

    letter = with_dead_letters(db, broker, go)
    table = Table(show_header=False, box=None)
    for name, value in (
        ("id", letter.id),
        ("reason", letter.reason),
        ("detail", letter.detail),
        ("queue", letter.queue),
        ("message", letter.message.message_id),
        ("attempts", str(letter.attempts)),
        ("dead at", when(letter.dead_at) + " UTC"),
        *((f"header {k}", v) for k, v in sorted(letter.message.headers.items())),
    ):
        table.add_row(safe(name, "bold"), safe(value))
    console.print(table)
    raw = letter.message.body
    body = redact_json(raw)
    try:
        pretty = json.dumps(json.loads(body), indent=2)
        console.print(Syntax(pretty, "json", word_wrap=True))
    except ValueError:
        # Not JSON: shown as Python would write the bytes, unless something is hidden.
        plain = body == raw.decode("utf-8", errors="backslashreplace")
        what = Text(f"body ({len(raw)} bytes, not JSON): ", style="dim")
        console.print(what + safe(repr(raw[:500]) if plain else body))


@dlq.command("replay")
def replay(
    letter_ids: Annotated[
        list[str] | None, typer.Argument(help="Dead letter ids (or unique starts).")
    ] = None,
    replay_all: Annotated[bool, typer.Option("--all", help="Replay every dead letter.")] = False,
    db: DbOption = DEFAULT_DB,
    broker: BrokerOption = None,
    note: Annotated[str, typer.Option(help="Why (goes on the record).")] = "",
    who: WhoOption = None,
) -> None:
    """Send dead letters back to their queues; consumers see them through their inbox.
    The replay is recorded in the saga store at --db with who asked and why."""
    if bool(letter_ids) == replay_all:
        raise typer.BadParameter("give dead letter ids or --all, not both and not neither")
    chosen: list[str] = []

    async def go(queue: DeadLetterQueue) -> int:
        if replay_all:
            return await queue.replay(None)
        chosen.extend([(await _resolve(queue, prefix)).id for prefix in letter_ids or []])
        return await queue.replay(chosen)

    count = with_dead_letters(db, broker, go)
    console.print(f"[green]replayed[/] {count} dead letter(s)")
    record_cli(db, who=who, action="replay", targets=chosen or ["all"], note=note)


@dlq.command("purge")
def purge(
    db: DbOption = DEFAULT_DB,
    broker: BrokerOption = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Throw away every dead letter."""
    if not yes:
        typer.confirm("Throw away every dead letter?", abort=True)

    async def go(queue: DeadLetterQueue) -> int:
        return await queue.purge()

    count = with_dead_letters(db, broker, go)
    console.print(f"[yellow]purged[/] {count} dead letter(s)")
