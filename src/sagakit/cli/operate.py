"""``sagakit retry / compensate / resolve / approve / reject``: a person acting on a saga,
on the record; ``sagakit audit``: the record.

The action travels to the orchestrator as a message through the saga store's outbox,
so it works the same embedded and distributed, and the orchestrator records it in the
saga's log with who asked and why.
"""

from __future__ import annotations

import asyncio
import getpass
import time
from typing import Annotated, Literal

import typer
from rich.table import Table

from sagakit import audit
from sagakit.cli.app import (
    DEFAULT_DB,
    DbOption,
    JsonOption,
    app,
    console,
    emit_json,
    fail,
    say_error,
    with_store,
)
from sagakit.cli.render import iso, local_time, safe
from sagakit.engine import liveness
from sagakit.engine.orchestrator import operator_message, signal_message
from sagakit.errors import StoreError, UnknownSagaError
from sagakit.model.events import OperatorIntervened, decode
from sagakit.stores import open_store
from sagakit.stores.sql import SqlSagaStore
from sagakit.stores.sqlite import SqliteSagaStore

#: The exit status of an action queued with no orchestrator running to take it.
NOBODY_TO_ACT = 3

Action = Literal["retry", "compensate", "resolve", "approve", "reject"]

WhoOption = Annotated[
    str | None, typer.Option("--who", help="Who is acting (default: your user name).")
]
WaitOption = Annotated[
    float,
    typer.Option(min=0, max=3600, help="Seconds to wait for the orchestrator to act (0: don't)."),
]
GroupOption = Annotated[str, typer.Option(help="The orchestrator group that runs the saga.")]
SagaArgument = Annotated[str, typer.Argument(help="The saga's id, or a unique start of it.")]


def record_cli(db: str, *, who: str | None, action: str, targets: list[str], note: str) -> None:
    """Put a person's action on the record in the saga store at ``db``; says so when
    there is no store there to record it in (the action itself is done)."""
    person = who or getpass.getuser()

    async def go() -> None:
        store = open_store(db)
        try:
            if isinstance(store, SqliteSagaStore) and not store.path.exists():
                raise StoreError(f"no sagakit store at {store.path}")
            if not await store.is_migrated():
                raise StoreError(f"{store.url_safe} has no sagakit tables")
            async with store.unit() as unit:
                at = await unit.now()
                for target in targets:
                    await audit.record(
                        unit,
                        who=person,
                        action=action,
                        target=target,
                        note=note,
                        via="cli",
                        at=at,
                    )
        finally:
            await store.close()

    try:
        asyncio.run(go())
    except (StoreError, ValueError, OSError) as exc:
        say_error(f"{action} done but not recorded: {exc}")


def act(
    action: Action, saga: str, *, db: str, note: str, who: str | None, wait: float, group: str
) -> None:
    person = who or getpass.getuser()

    async def go(store: SqlSagaStore) -> str:
        try:
            saga_id = await store.resolve(saga)
        except UnknownSagaError as exc:
            raise fail(str(exc)) from exc
        before = len(await store.history(saga_id))
        if action == "approve" or action == "reject":  # noqa: PLR1714 - narrows the Literal
            message = signal_message(saga_id, action, who=person, note=note, group=group)
        else:
            message = operator_message(saga_id, action, who=person, note=note, group=group)
        async with store.unit() as unit:
            await unit.enqueue([message])
            await audit.record(
                unit,
                who=person,
                action=action,
                target=saga_id,
                note=note,
                via="cli",
                at=await unit.now(),
            )
            last = await liveness.last_beat(unit, group)
        now = time.time()
        if not liveness.alive(last, now):
            seen = f"last seen {now - last:.0f}s ago" if last is not None else "never seen"
            raise fail(
                f"{saga_id}: {action} queued, but no orchestrator of group {group!r} runs "
                f"on this store ({seen}): nobody will act on it until one starts",
                NOBODY_TO_ACT,
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while loop.time() < deadline:
            for stored in (await store.history(saga_id))[before:]:
                event = decode(stored)
                if isinstance(event, OperatorIntervened) and event.who == person:
                    if event.refused:
                        raise fail(f"{saga_id}: {action} refused: {event.refused}")
                    status = event.resume or (await store.get(saga_id)).status
                    return f"{saga_id}: {action} done; the saga is now {status}"
            await asyncio.sleep(0.1)
        return f"{saga_id}: {action} queued for the orchestrator (it has not acted yet)"

    console.print(safe(with_store(db, go)), soft_wrap=True)


@app.command()
def retry(
    saga: SagaArgument,
    note: Annotated[str, typer.Option(help="Why (goes into the saga's log).")] = "",
    db: DbOption = DEFAULT_DB,
    who: WhoOption = None,
    wait: WaitOption = 10.0,
    group: GroupOption = "orchestrator",
) -> None:
    """Try again what a saga that needs attention is stuck on, with a fresh retry budget."""
    act("retry", saga, db=db, note=note, who=who, wait=wait, group=group)


@app.command()
def compensate(
    saga: SagaArgument,
    note: Annotated[str, typer.Option(help="Why (goes into the saga's log).")] = "",
    db: DbOption = DEFAULT_DB,
    who: WhoOption = None,
    wait: WaitOption = 10.0,
    group: GroupOption = "orchestrator",
) -> None:
    """Undo a saga: compensate what it did, in reverse (not once its pivot committed)."""
    act("compensate", saga, db=db, note=note, who=who, wait=wait, group=group)


@app.command()
def resolve(
    saga: SagaArgument,
    note: Annotated[str, typer.Option(help="What was done by hand (required).")],
    db: DbOption = DEFAULT_DB,
    who: WhoOption = None,
    wait: WaitOption = 10.0,
    group: GroupOption = "orchestrator",
) -> None:
    """Close a saga that needs attention after handling it by hand."""
    if not note.strip():
        raise typer.BadParameter("say what was done", param_hint="'--note'")
    act("resolve", saga, db=db, note=note, who=who, wait=wait, group=group)


@app.command()
def approve(
    saga: SagaArgument,
    note: Annotated[str, typer.Option(help="Why (goes into the saga's log).")] = "",
    db: DbOption = DEFAULT_DB,
    who: WhoOption = None,
    wait: WaitOption = 10.0,
    group: GroupOption = "orchestrator",
) -> None:
    """Approve a saga waiting on an approval step; it goes on."""
    act("approve", saga, db=db, note=note, who=who, wait=wait, group=group)


@app.command()
def reject(
    saga: SagaArgument,
    note: Annotated[str, typer.Option(help="Why (required; goes into the saga's log).")],
    db: DbOption = DEFAULT_DB,
    who: WhoOption = None,
    wait: WaitOption = 10.0,
    group: GroupOption = "orchestrator",
) -> None:
    """Reject a saga waiting on an approval step; it compensates."""
    if not note.strip():
        raise typer.BadParameter("say why", param_hint="'--note'")
    act("reject", saga, db=db, note=note, who=who, wait=wait, group=group)


@app.command("audit")
def audit_log(
    db: DbOption = DEFAULT_DB,
    target: Annotated[
        str | None, typer.Option(help="Only actions on this saga or dead letter id.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """Every operator action on the record, newest first: who did what, to which saga
    or dead letter, why, and through which door (api or cli)."""

    async def go(store: SqlSagaStore) -> list[audit.Action]:
        async with store.unit() as unit:
            return await audit.recent(unit, limit=limit, target=target)

    found = with_store(db, go)
    if as_json:
        emit_json({"items": [{**a.as_dict(), "at": iso(a.at)} for a in found]})
        return
    if not found:
        console.print("no actions on the record")
        return
    table = Table(title="operator actions", title_justify="left", header_style="bold")
    for column in ("when", "who", "action", "target", "note", "via"):
        table.add_column(column, no_wrap=column in {"when", "action"})
    for action in found:
        table.add_row(
            local_time(action.at),
            safe(action.who),
            safe(action.action),
            safe(action.target),
            safe(action.note),
            action.via,
        )
    console.print(table)
