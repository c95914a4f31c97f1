"""What every lab uses: a fresh directory, the shop on it, a narrator, and a window on
the event bus.

A lab runs the shop's real pieces in one process (the embedded default: one SQLite file
per service, the in-process transport). It tells what happens as a story when asked,
through the same log lines the services write, and returns its key figures, measured
from the databases and the wire rather than assumed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console, RenderableType
from rich.table import Table
from sqlalchemy import func, select

from sagakit import SagaDefinition
from sagakit.model.messages import Envelope
from sagakit.observe.logs import get_logger
from sagakit.ports import Delivery
from sagakit.stores.sql import SqlSagaStore
from sagakit.transports.memory import MemoryTransport
from sagakit_shop.app import Mode, Shop, embedded_files, embedded_urls, open_stores
from sagakit_shop.services import Service
from sagakit_shop.world import World

#: Redeliveries in a lab need not wait long: nothing outlives the process anyway.
LAB_RETRY_TIERS = (0.05, 0.1, 0.2, 0.5)


def lab_transport() -> MemoryTransport:
    return MemoryTransport(retry_tiers=LAB_RETRY_TIERS, max_deliveries=8)


def lab_files(directory: Path, *extra_dbs: str) -> list[Path]:
    """Every file a lab may create in ``directory``: the shop's, and extra databases."""
    extra = [directory / f"{name}{suffix}" for name in extra_dbs for suffix in _SQLITE_SUFFIXES]
    return [*embedded_files(directory), *extra]


_SQLITE_SUFFIXES = (".db", ".db-wal", ".db-shm")


def fresh(directory: Path, *extra_dbs: str) -> None:
    """Start from nothing, deleting only the files a lab makes (the rest is the user's)."""
    directory.mkdir(parents=True, exist_ok=True)
    for path in lab_files(directory, *extra_dbs):
        path.unlink(missing_ok=True)


async def open_shop(
    directory: Path,
    world: World,
    *,
    mode: Mode = "orchestration",
    replace: Mapping[str, type[Service]] | None = None,
    extra_dbs: Sequence[str] = (),
) -> Shop:
    """A fresh shop in ``directory``, seeded with ``world``. ``replace`` swaps a service
    for a subclass of it (a slow payment service, a busy mail server)."""
    await asyncio.to_thread(fresh, directory, *extra_dbs)
    shop = Shop(open_stores(embedded_urls(directory)), mode=mode)
    try:
        for name, cls in (replace or {}).items():
            shop.services[name] = cls(shop.stores[name])
        await shop.setup(world)
    except BaseException:
        await shop.close()
        raise
    return shop


async def unsent(shop: Shop) -> dict[str, int]:
    """Committed outbox rows not yet published, per store."""
    return {name: await store.unsent_count() for name, store in shop.stores.items()}


def never_published(left: Mapping[str, int]) -> list[str]:
    """The outbox promise, checked once a lab's runtime has stopped: every committed
    row was published."""
    stuck = {name: n for name, n in left.items() if n}
    if not stuck:
        return []
    where = ", ".join(f"{name}: {n}" for name, n in stuck.items())
    return [f"{sum(stuck.values())} committed outbox row(s) were never published ({where})"]


async def count(store: SqlSagaStore, query: Any) -> int:
    async with store.unit() as unit:
        return int(await unit.connection.scalar(select(func.count()).select_from(query)) or 0)


async def rows(store: SqlSagaStore, query: Any) -> list[Any]:
    async with store.unit() as unit:
        return list(await unit.connection.execute(query))


async def until(check: Callable[[], Any], *, timeout: float, what: str, poll: float = 0.02) -> None:
    """Wait until ``check()`` (sync or async) is true, or raise TimeoutError saying ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout:g}s")
        await asyncio.sleep(poll)


class Narrator:
    """A lab's own voice in the story: ``[lab] ...`` lines among the services' lines,
    and tables, all on the story's stream (stderr). Silent unless ``story``."""

    def __init__(self, *, story: bool) -> None:
        self.story = story
        self._voices = {
            "lab": get_logger("shop.lab", service="lab"),
            "bus": get_logger("shop.lab", service="bus"),
        }
        self._console = Console(stderr=True) if story else None

    def say(self, text: str, *, who: str = "lab") -> None:
        if self.story:
            self._voices[who].info(text)

    def warn(self, text: str) -> None:
        if self.story:
            self._voices["lab"].warning(text)

    def show(self, renderable: RenderableType) -> None:
        if self._console is not None:
            self._console.print(renderable)


def table(title: str, columns: Sequence[str], body: Iterable[Sequence[object]]) -> Table:
    out = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        out.add_column(column, overflow="fold")
    for row in body:
        out.add_row(*("" if cell is None else str(cell) for cell in row))
    return out


# ---------------------------------------------------------------------------- the bus


@dataclass(frozen=True, slots=True)
class SeenEvent:
    """One choreography event as it crossed the bus."""

    key: str
    message_id: str
    causation_id: str | None
    saga_id: str
    step: str | None
    reason: str | None


class EventTap:
    """A consumer bound to every event of some sagas, as the tracker is: it writes down
    the order in which they were published. A lab's window on the bus; it changes
    nothing."""

    def __init__(
        self,
        store: SqlSagaStore,
        definitions: Sequence[SagaDefinition],
        *,
        on_event: Callable[[SeenEvent], None] | None = None,
        name: str = "lab-tap",
    ) -> None:
        self.store = store
        self.queue = f"sagakit.{name}"
        self.bindings = [f"{d.name}.#" for d in definitions]
        self.seen: list[SeenEvent] = []
        self._ids: set[str] = set()
        self._on_event = on_event

    async def handle(self, deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            event = Envelope.from_bytes(delivery.message.body)
            if event.message_id in self._ids:
                continue  # at-least-once: a redelivered event was already written down
            self._ids.add(event.message_id)
            reason = event.payload.get("reason")
            seen = SeenEvent(
                key=event.type,
                message_id=event.message_id,
                causation_id=event.causation_id,
                saga_id=event.saga_id,
                step=event.step,
                reason=str(reason) if reason else None,
            )
            self.seen.append(seen)
            if self._on_event is not None:
                self._on_event(seen)

    def routing_keys(self) -> list[str]:
        return [event.key for event in self.seen]


@dataclass(frozen=True, slots=True)
class Reaction:
    """A step that ran because an event arrived: observed, from the event it published
    (whose causation is the event it reacted to)."""

    trigger: str
    service: str
    step: str
    published: str


def reactions(seen: Sequence[SeenEvent], definition: SagaDefinition) -> list[Reaction]:
    """Who reacted to which event, read from causation ids on the wire."""
    by_id = {event.message_id: event for event in seen}
    out = []
    for event in seen:
        trigger = by_id.get(event.causation_id or "")
        if trigger is None or event.step is None:
            continue
        participant = definition.step(event.step).participant
        out.append(Reaction(trigger.key, participant, event.step, event.key))
    return out
