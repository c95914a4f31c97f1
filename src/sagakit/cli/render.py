"""How sagas look in a terminal (the list table and the timeline of one saga) and in
``--json``.

Whatever came from users or from elsewhere (keys, reasons, notes, step names, dead
letters' headers) goes in as plain :class:`~rich.text.Text`, never as markup, with its
control characters escaped: ``[link=...]`` or ``[/]`` in a note is shown as written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime

from rich.console import Group
from rich.table import Table
from rich.text import Text

from sagakit.errors import CorruptLogError
from sagakit.model.describe import describe, outcome
from sagakit.model.events import StoredEvent, decode
from sagakit.model.state import SagaState
from sagakit.observe.redaction import printable
from sagakit.ports import SagaRow

#: How much of a dead letter's id ``dlq list`` shows; ``dlq show`` takes any unique start.
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


def local_time(epoch: float) -> str:
    """The date and time in this machine's time zone, to the second."""
    return datetime.fromtimestamp(epoch, tz=UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def iso(epoch: float | None) -> str | None:
    """ISO 8601 in UTC, for ``--json``."""
    return None if epoch is None else datetime.fromtimestamp(epoch, tz=UTC).isoformat()


def safe(text: object, style: str = "") -> Text:
    """Text from elsewhere, shown as written: no markup, control characters escaped."""
    return Text(printable(str(text)), style=style)


def saga_json(row: SagaRow) -> dict[str, object]:
    out: dict[str, object] = asdict(row)
    for key in ("created_at", "updated_at", "deadline"):
        out[key] = iso(out[key])  # type: ignore[arg-type]
    return out


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
            safe(row.saga_id),
            safe(f"{row.definition}@{row.definition_version}"),
            safe(row.key or ""),
            Text(row.status, style=STATUS_STYLE.get(row.status, "")),
            safe(row.current_step or ""),
            local_time(row.updated_at),
            safe(row.reason or ""),
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
    head.append(printable(f"saga {saga_id}"), style="bold")
    if state is not None:
        head.append(printable(f"  {state.definition} v{state.definition_version}"))
        if state.key:
            head.append(printable(f"  key {state.key}"))
        head.append("  ")
        head.append(state.status.value, style=STATUS_STYLE.get(state.status.value, ""))
        if state.reason:
            head.append(printable(f"  ({state.reason})"), style="dim")
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
                safe(stored.type, "bold red"),
                "",
                safe(f"unreadable: {exc.reason}", "bold red"),
            )
            continue
        style = OUTCOME_STYLE[outcome(event)]
        table.add_row(
            str(stored.seq),
            relative(stored.recorded_at - start),
            safe(stored.type, style),
            safe(getattr(event, "step", "") or ""),
            safe(describe(event), style),
        )
    parts: list[Text | Table] = [head, Text(f"started {when(start)} UTC", style="dim"), table]
    if error is not None:
        parts.append(safe(error, "bold red"))
    return Group(*parts)


def timeline_json(
    saga_id: str,
    events: Sequence[StoredEvent],
    state: SagaState | None,
    error: CorruptLogError | None = None,
) -> dict[str, object]:
    """The timeline for ``--json``: the saga's head and every event, as the admin API
    gives them."""
    items: list[dict[str, object]] = []
    for stored in events:
        item: dict[str, object] = {"seq": stored.seq, "type": stored.type}
        item["at"] = iso(stored.recorded_at)
        try:
            event = decode(stored)
        except CorruptLogError as exc:
            items.append({**item, "step": None, "outcome": "failed", "text": exc.reason})
            continue
        step = getattr(event, "step", None)
        items.append({**item, "step": step, "outcome": outcome(event), "text": describe(event)})
    head: dict[str, object] = {"saga_id": saga_id}
    if state is not None:
        head |= {
            "definition": state.definition,
            "definition_version": state.definition_version,
            "key": state.key,
            "status": state.status.value,
            "reason": state.reason,
        }
    return {"saga": head, "events": items, "error": str(error) if error else None}
