"""The order saga as sagakit runs it: one definition, four participants."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, Literal, cast

from sqlalchemy import text

from bench import workload
from sagakit import (
    Participant,
    RetryPolicy,
    SagaDefinition,
    SagaStatus,
    Step,
    StepContext,
    StepKind,
    StepRejected,
)
from sagakit.model.decision import Decision
from sagakit.ports import SagaStore, UnitOfWork

_RETRY = RetryPolicy(attempts=5, backoff=timedelta(milliseconds=50), cap=timedelta(seconds=1))
_FOREVER = RetryPolicy(attempts=None, backoff=timedelta(milliseconds=50), cap=timedelta(seconds=1))

ORDER = SagaDefinition(
    "bench_order",
    steps=[
        Step(
            name="pending",
            participant="orders",
            command="set_pending",
            compensation="reject",
            retry=_RETRY,
        ),
        Step(
            name="reserve",
            participant="inventory",
            command="reserve",
            compensation="release",
            retry=_RETRY,
        ),
        Step(
            name="charge",
            participant="payment",
            command="charge",
            compensation="refund",
            retry=_RETRY,
        ),
        Step(
            name="ship", participant="shipping", command="ship", kind=StepKind.PIVOT, retry=_RETRY
        ),
        Step(
            name="approve",
            participant="orders",
            command="approve",
            kind=StepKind.RETRIABLE,
            retry=_FOREVER,
        ),
    ],
)

PARTICIPANTS = ("orders", "inventory", "payment", "shipping")

_SQL = {
    name: text(sql)
    for name, sql in {
        "set_pending": workload.SET_PENDING,
        "reject": workload.REJECT,
        "approve": workload.APPROVE,
        "reserve": workload.RESERVE,
        "release": workload.RELEASE,
        "charge": workload.CHARGE,
        "refund": workload.REFUND,
        "ship": workload.SHIP,
    }.items()
}
_COMMANDS = {
    "orders": ("set_pending", "reject", "approve"),
    "inventory": ("reserve", "release"),
    "payment": ("charge", "refund"),
    "shipping": ("ship",),
}


#: How handlers write: ``write`` holds each write for the batch's grouped send
#: (``ctx.write``); ``statement`` runs it on ``ctx.connection`` and decides on its row
#: count, as the README and the tutorial write handlers.
Style = Literal["write", "statement"]


def _handler(command: str, style: Style) -> Any:
    statement = _SQL[command]

    async def handle(ctx: StepContext) -> None:
        p = ctx.payload
        if command == "ship" and p["fails"]:
            raise StepRejected("shipment refused")
        params = {"id": p["id"], "item": p["item"], "qty": p["qty"], "amount": p["amount"]}
        if style == "write":
            await ctx.write(statement, params)
            return
        done = await ctx.connection.execute(statement, params)
        if done.rowcount == 0:
            raise StepRejected(f"{command}: no row for order {p['id']}")

    return handle


def participants(
    store: SagaStore, names: Iterable[str] = PARTICIPANTS, *, style: Style = "write"
) -> list[Participant]:
    made = []
    for name in names:
        participant = Participant(name, store)
        for command in _COMMANDS[name]:
            participant.on(command, _handler(command, style))
        made.append(participant)
    return made


OUTCOMES = {
    SagaStatus.COMPLETED: "approved",
    SagaStatus.COMPENSATED: "rejected",
    SagaStatus.NEEDS_ATTENTION: "needs_attention",
}


class Watched:
    """A store whose committed decisions are watched: whoever waits on a saga id hears
    when the decision that ended it has committed. Everything else is the store's."""

    def __init__(self, store: SagaStore) -> None:
        self.inner = store
        self.waiters: dict[str, asyncio.Future[str]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def wait(self, saga_id: str) -> asyncio.Future[str]:
        future = asyncio.get_running_loop().create_future()
        self.waiters[saga_id] = future
        return future

    @asynccontextmanager
    async def unit(self) -> AsyncIterator[UnitOfWork]:
        async with self.inner.unit() as unit:
            watched = _WatchedUnit(unit)
            yield cast(UnitOfWork, watched)
        for decision in watched.ended:
            future = self.waiters.pop(decision.state.saga_id, None)
            if future is not None and not future.done():
                future.set_result(OUTCOMES[decision.state.status])


class _WatchedUnit:
    def __init__(self, unit: UnitOfWork) -> None:
        self._unit = unit
        self.ended: list[Decision] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._unit, name)

    async def append(self, decisions: Sequence[Decision]) -> None:
        await self._unit.append(decisions)
        self.ended.extend(d for d in decisions if d.events and d.state.status.terminal)
