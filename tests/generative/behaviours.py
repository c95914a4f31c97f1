"""The participants of a generated run: handlers that do what the plans say.

Every participant (``p0`` .. ``p3``) handles two commands, ``act`` and ``undo``, for
every step of every saga it is named in; each call looks up the saga's plan and does
the behaviour planned for that step and try. The business effect is real rows in the
participant's own tables, written the way the behaviour says:

* ``gen_effect``: one row per effect: the action of a step that succeeded (``do``)
  or the compensation that undid it (``undo``), with the try that wrote it;
* ``gen_counter``: a running total per participant, spread over a few rows (slots)
  that many sagas share, so that concurrent sagas write the same rows. An action adds
  one, a compensation takes one off, so each participant's total must equal its
  ``do`` rows minus its ``undo`` rows.

``write`` style holds both writes with ``ctx.write`` (sent grouped with the batch);
``connection`` style is the README's: a conditional ``UPDATE`` on ``ctx.connection``,
a decision on its row count, then the insert. A handler planned to run past its
timeout sleeps in Python, or, in ``connection`` style on PostgreSQL, in a statement
(``pg_sleep``), as a query stuck on a lock would.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import text

from sagakit import Participant, StepContext, StepRejected, TransientError
from sagakit.stores.sql import SqlSagaStore
from tests.generative.scenario import Act, Behaviour, SagaCase, Scenario, StepCase, Style, reply_of

TABLES = (
    "CREATE TABLE gen_effect (participant TEXT NOT NULL, saga_id TEXT NOT NULL, "
    "step TEXT NOT NULL, op TEXT NOT NULL, attempt INT NOT NULL, style TEXT NOT NULL)",
    "CREATE TABLE gen_counter (participant TEXT NOT NULL, slot INT NOT NULL, "
    "net INT NOT NULL, open INT NOT NULL, PRIMARY KEY (participant, slot))",
)
_COUNT = text(
    "UPDATE gen_counter SET net = net + :by WHERE participant = :participant AND slot = :slot"
)
_COUNT_IF_OPEN = text(
    "UPDATE gen_counter SET net = net + :by "
    "WHERE participant = :participant AND slot = :slot AND open = 1"
)
_SLOW = text("SELECT pg_sleep(:seconds)")
_EFFECT = text(
    "INSERT INTO gen_effect (participant, saga_id, step, op, attempt, style) "
    "VALUES (:participant, :saga_id, :step, :op, :attempt, :style)"
)

#: (saga, step, "do" | "undo") -> how many rows
Rows = Counter[tuple[str, str, str]]


class PlannedFailure(RuntimeError):
    """The unexpected exception a plan asks a handler to raise."""


def poison(name: str) -> object:
    """A value that is not JSON (or would not come back from JSON as it went in)."""
    values: dict[str, object] = {
        "object": object(),
        "nan": float("nan"),
        "inf": float("inf"),
        "decimal": Decimal("9.99"),
        "datetime": datetime.now(UTC),
        "set": {1, 2},
        "bytes": b"\x00bytes",
    }
    return values[name]


def start_data(saga: SagaCase) -> dict[str, Any]:
    """What a saga is started with: its flags, and the value that is not JSON if planned."""
    data = saga.data
    if saga.start_poison:
        data["bad"] = poison(saga.start_poison)
    return data


def sleep_for(step: StepCase) -> float:
    """How long a handler planned to run past its timeout sleeps: far past it."""
    return step.timeout * 2 + 0.2


async def create_tables(store: SqlSagaStore, participants: Iterable[str], slots: int) -> None:
    async with store.unit() as unit:
        for ddl in TABLES:
            await unit.connection.execute(text(ddl))
        rows = [{"p": p, "s": slot} for p in participants for slot in range(slots)]
        if not rows:
            return
        await unit.connection.execute(
            text("INSERT INTO gen_counter (participant, slot, net, open) VALUES (:p, :s, 0, 1)"),
            rows,
        )


class Plans:
    """The scenario's plans, where the handlers look up what each call should do."""

    def __init__(self, scenario: Scenario) -> None:
        self.sagas = {saga.saga_id: saga for saga in scenario.sagas}
        self.slots = scenario.slots
        #: Every call, as (saga, step, op, attempt, behaviour): for reports.
        self.calls: list[tuple[str, str, str, int, str]] = []
        #: When the last handler planned to sleep past its timeout would wake (monotonic).
        self.sleeping_until = 0.0

    def look_up(self, ctx: StepContext) -> tuple[SagaCase, StepCase, Behaviour]:
        saga = self.sagas[ctx.saga_id]
        step = saga.step(ctx.step)
        attempt = max(ctx.attempt, 1)
        behaviour = step.action(attempt) if ctx.op == "action" else step.compensation(attempt)
        self.calls.append((ctx.saga_id, ctx.step, ctx.op, ctx.attempt, str(behaviour)))
        if behaviour.act is Act.SLEEP:
            wakes = time.monotonic() + sleep_for(step)
            self.sleeping_until = max(self.sleeping_until, wakes)
        return saga, step, behaviour

    def slot(self, saga_id: str) -> int:
        return zlib.crc32(saga_id.encode()) % self.slots


@dataclass(frozen=True, slots=True)
class Desk:
    """Where one call of a participant's handler does its work."""

    participant: str
    slot: int  # its row of the participant's counter
    #: Sleep in a statement on ctx.connection (pg_sleep) rather than in Python.
    sleeps_in_database: bool


def participant(name: str, store: SqlSagaStore, plans: Plans) -> Participant:
    """Participant ``name`` on ``store``, handling ``act`` and ``undo`` by the plans."""
    me = Participant(name, store)
    on_postgres = store.url.startswith("postgresql")

    async def handle(ctx: StepContext) -> dict[str, Any] | None:
        saga, step, behaviour = plans.look_up(ctx)
        in_database = on_postgres and behaviour.style is Style.CONNECTION
        desk = Desk(name, plans.slot(ctx.saga_id), sleeps_in_database=in_database)
        return await perform(ctx, behaviour, desk, saga, step)

    me.on("act", handle)
    me.on("undo", handle)
    return me


async def perform(
    ctx: StepContext, behaviour: Behaviour, desk: Desk, saga: SagaCase, step: StepCase
) -> dict[str, Any] | None:
    """Do one planned behaviour inside the handler's transaction."""
    if behaviour.writes:
        await record(ctx, behaviour.style, desk)
    match behaviour.act:
        case Act.OK:
            return reply_of(saga, step) if behaviour.reply else None
        case Act.REFUSE:
            raise StepRejected(f"planned refusal of {ctx.step} {ctx.op} try {ctx.attempt}")
        case Act.RAISE:
            raise PlannedFailure(f"planned failure of {ctx.step} {ctx.op} try {ctx.attempt}")
        case Act.TRANSIENT:
            raise TransientError(f"planned transient failure of {ctx.step} try {ctx.attempt}")
        case Act.SLEEP:
            if desk.sleeps_in_database:  # a slow statement, the way a stuck query is
                await ctx.connection.execute(_SLOW, {"seconds": sleep_for(step)})
            else:
                await asyncio.sleep(sleep_for(step))
            return None
        case Act.POISON:
            assert behaviour.poison is not None
            return {"x": poison(behaviour.poison)}


async def record(ctx: StepContext, style: Style, desk: Desk) -> None:
    """Write one effect row and move the participant's counter, in ``style``."""
    undo = ctx.op == "compensation"
    name = desk.participant
    count = {"by": -1 if undo else 1, "participant": name, "slot": desk.slot}
    effect = {
        "participant": name,
        "saga_id": ctx.saga_id,
        "step": ctx.step,
        "op": "undo" if undo else "do",
        "attempt": ctx.attempt,
        "style": str(style),
    }
    if style is Style.WRITE:
        await ctx.write(_COUNT, count)
        await ctx.write(_EFFECT, effect)
        return
    taken = await ctx.connection.execute(_COUNT_IF_OPEN, count)
    if taken.rowcount != 1:  # never, in these runs: the row is always there and open
        raise StepRejected(f"counter {name}/{desk.slot} is closed")
    await ctx.connection.execute(_EFFECT, effect)


async def read_rows(stores: Iterable[SqlSagaStore]) -> tuple[Rows, dict[str, int]]:
    """Every effect row, counted by (saga, step, op), and each participant's total."""
    rows: Rows = Counter()
    totals: Counter[str] = Counter()
    for store in _distinct(stores):
        async with store.unit() as unit:
            found = await unit.connection.execute(text("SELECT saga_id, step, op FROM gen_effect"))
            rows.update((r[0], r[1], r[2]) for r in found)
            sums = await unit.connection.execute(
                text("SELECT participant, SUM(net) FROM gen_counter GROUP BY participant")
            )
            for participant_name, net in sums:
                totals[participant_name] += int(net)
    return rows, dict(totals)


def _distinct(stores: Iterable[SqlSagaStore]) -> list[SqlSagaStore]:
    seen: dict[int, SqlSagaStore] = {}
    for store in stores:
        seen.setdefault(id(store), store)
    return list(seen.values())


def participants_for(stores: Mapping[str, SqlSagaStore], plans: Plans) -> list[Participant]:
    return [participant(name, store, plans) for name, store in stores.items()]


__all__ = [
    "Desk",
    "PlannedFailure",
    "Plans",
    "create_tables",
    "participant",
    "participants_for",
    "perform",
    "poison",
    "read_rows",
    "record",
    "sleep_for",
    "start_data",
]
