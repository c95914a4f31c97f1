"""``sagakit dlq``: list, show, replay and purge dead letters, embedded or on RabbitMQ."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from rich.syntax import Syntax
from rich.table import Table

from sagakit.cli.app import DEFAULT_DB, DbOption, app, console, fail
from sagakit.cli.render import SHORT_ID, when
from sagakit.errors import SagaError
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


async def _resolve(queue: DeadLetterQueue, prefix: str) -> DeadLetter:
    try:
        return await queue.get(prefix)
    except LookupError:
        pass
    found = [letter for letter in await queue.list(limit=100_000) if letter.id.startswith(prefix)]
    if len(found) == 1:
        return found[0]
    if found:
        raise fail(f"{prefix!r} is the start of several dead letter ids; give more of it")
    raise fail(f"no dead letter with id {prefix!r}")


@dlq.command("list")
def list_letters(
    db: DbOption = DEFAULT_DB,
    broker: BrokerOption = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="At most this many.")] = 50,
) -> None:
    """List dead letters, oldest first, with the reason each was set aside."""

    async def go(queue: DeadLetterQueue) -> tuple[list[DeadLetter], int]:
        return await queue.list(limit=limit), await queue.depth()

    letters, depth = with_dead_letters(db, broker, go)
    if not letters:
        console.print("no dead letters")
        return
    table = Table(title="dead letters", title_justify="left", header_style="bold")
    for column in ("id", "reason", "queue", "type", "saga", "tries", "dead at", "detail"):
        table.add_column(column, no_wrap=column in {"id", "reason", "dead at"})
    for letter in letters:
        headers = letter.message.headers
        table.add_row(
            letter.id[:SHORT_ID],
            letter.reason,
            letter.queue,
            headers.get("type", ""),
            headers.get("saga_id", "")[:SHORT_ID],
            str(letter.attempts),
            when(letter.dead_at),
            letter.detail[:80],
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
        table.add_row(f"[bold]{name}[/]", value)
    console.print(table)
    body = letter.message.body
    try:
        pretty = json.dumps(json.loads(body), indent=2)
        console.print(Syntax(pretty, "json", word_wrap=True))
    except ValueError:
        console.print(f"[dim]body ({len(body)} bytes, not JSON):[/] {body[:500]!r}")


@dlq.command("replay")
def replay(
    letter_ids: Annotated[
        list[str] | None, typer.Argument(help="Dead letter ids (or unique starts).")
    ] = None,
    replay_all: Annotated[bool, typer.Option("--all", help="Replay every dead letter.")] = False,
    db: DbOption = DEFAULT_DB,
    broker: BrokerOption = None,
) -> None:
    """Send dead letters back to their queues; consumers see them through their inbox."""
    if bool(letter_ids) == replay_all:
        raise typer.BadParameter("give dead letter ids or --all, not both and not neither")

    async def go(queue: DeadLetterQueue) -> int:
        if replay_all:
            return await queue.replay(None)
        chosen = [(await _resolve(queue, prefix)).id for prefix in letter_ids or []]
        return await queue.replay(chosen)

    count = with_dead_letters(db, broker, go)
    console.print(f"[green]replayed[/] {count} dead letter(s)")


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
