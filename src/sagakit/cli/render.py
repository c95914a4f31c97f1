"""How sagas look in a terminal: the list table and the timeline of one saga."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from rich.console import Group
from rich.table import Table
from rich.text import Text

from sagakit.errors import CorruptLogError
from sagakit.log import SagaState, StoredEvent, decode, describe, outcome
from sagakit.ports import SagaRow

#: How much of a saga id the list shows; ``sagakit show`` accepts any unique prefix.
SHORT_ID = 12

STATUS_STYLE = {
    "running": "cyan",
    "compensating": "yellow",
    "completed": "green",
    "compensated": "magenta",
    "needs_attention": "bold red",
}
OUTCOME_STYLE = {"ok": "green", "failed": "red", "undo": "yellow", "info": ""}


def when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def clock_time(epoch: float) -> str:
    """Time of day for today's moments, the full date otherwise (UTC)."""
    moment = datetime.fromtimestamp(epoch, tz=UTC)
    if moment.date() == datetime.now(UTC).date():
        return moment.strftime("%H:%M:%S")
    return moment.strftime("%Y-%m-%d %H:%M")


def relative(seconds: float) -> str:
    if seconds < 1:
        return f"+{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"+{seconds:.2f}s"
    return f"+{seconds / 60:.1f}m"


def saga_table(rows: Sequence[SagaRow], *, title: str = "sagas") -> Table:
    table = Table(title=title, title_justify="left", header_style="bold")
    for column in ("saga", "definition", "key", "status", "step", "updated", "reason"):
        table.add_column(column, no_wrap=column in {"saga", "status", "updated"})
    for row in rows:
        table.add_row(
            row.saga_id[:SHORT_ID],
            f"{row.definition}@{row.definition_version}",
            row.key or "",
            Text(row.status, style=STATUS_STYLE.get(row.status, "")),
            row.current_step or "",
            clock_time(row.updated_at),
            row.reason or "",
        )
    return table


def timeline(
    saga_id: str,
    events: Sequence[StoredEvent],
    state: SagaState | None,
    error: CorruptLogError | None = None,
) -> Group:
    """The story of one saga: every event with its time from the start, coloured."""
    head = Text()
    head.append(f"saga {saga_id}", style="bold")
    if state is not None:
        head.append(f"  {state.definition} v{state.definition_version}")
        if state.key:
            head.append(f"  key {state.key}")
        head.append("  ")
        head.append(state.status.value, style=STATUS_STYLE.get(state.status.value, ""))
        if state.reason:
            head.append(f"  ({state.reason})", style="dim")
    start = events[0].recorded_at if events else 0.0
    table = Table(header_style="bold", box=None, pad_edge=False)
    for column in ("#", "time", "event", "step", "what happened"):
        table.add_column(column, no_wrap=column != "what happened")
    for stored in events:
        try:
            event = decode(stored)
        except CorruptLogError as exc:
            table.add_row(
                str(stored.seq),
                relative(stored.recorded_at - start),
                Text(stored.type, style="bold red"),
                "",
                Text(f"unreadable: {exc.reason}", style="bold red"),
            )
            continue
        style = OUTCOME_STYLE[outcome(event)]
        table.add_row(
            str(stored.seq),
            relative(stored.recorded_at - start),
            Text(stored.type, style=style),
            str(getattr(event, "step", "") or ""),
            Text(describe(event), style=style),
        )
    parts: list[Text | Table] = [head, Text(f"started {when(start)} UTC", style="dim"), table]
    if error is not None:
        parts.append(Text(str(error), style="bold red"))
    return Group(*parts)
