"""Lab 3: the orchestrator's state table, read mid-saga.

The orchestrator keeps every saga's state as its log, and next to it, in the same
transaction, a queryable row: status, current step, how many events so far. This lab
slows the payment service down on purpose, places a few orders (one set up to run out
of stock, one with a declined card) and reads that table while they run, as an
operator would with ``sagakit list``, then once more when every saga has ended.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from sagakit import Runtime, SagaHandle, StepContext, outcomes
from sagakit.ports import SagaRow
from sagakit_shop.contracts import ChargePayment, PaymentCharged
from sagakit_shop.labs.kit import (
    Narrator,
    lab_transport,
    never_published,
    open_shop,
    table,
    unsent,
    until,
)
from sagakit_shop.services.payment import PaymentService
from sagakit_shop.world import default_world

TITLE = "The orchestrator's state table"
LESSON = (
    "Orders run through a deliberately slow payment step while the orchestrator's "
    "sagas table is read mid-saga (status, current step), and again at the end."
)

SLOW_STEP = "charge_payment"

#: (customer, item, quantity): two good orders, one out of stock, one declined card.
ORDERS = (
    ("c-ada", "lamp", 1),
    ("c-grace", "globe", 1000),
    ("c-mallory", "mug", 1),
    ("c-edsger", "chair", 1),
)


class SlowPaymentService(PaymentService):
    """The shop's payment service behind a slow card network."""

    delay = 0.4

    async def charge(self, ctx: StepContext, cmd: ChargePayment) -> PaymentCharged:
        ctx.log.info(f"Card network is slow: order #{cmd.number} waits {self.delay}s")
        await asyncio.sleep(self.delay)
        return await super().charge(ctx, cmd)


def _row(row: SagaRow) -> dict[str, Any]:
    return {
        "saga_id": row.saga_id,
        "status": row.status,
        "current_step": row.current_step,
        "events": row.version,
        "reason": row.reason,
    }


def _step(row: dict[str, Any]) -> str:
    if row["current_step"]:
        return f"awaiting {row['current_step']}"
    if row["status"] == "completed":
        return "done"
    return str(row["reason"] or "-")


def _show(say: Narrator, title: str, found: list[dict[str, Any]]) -> None:
    say.show(
        table(
            title,
            ["saga", "status", "step", "events"],
            [(r["saga_id"], r["status"].upper(), _step(r), r["events"]) for r in found],
        )
    )


async def run(directory: Path, *, story: bool) -> dict[str, Any]:
    say = Narrator(story=story)
    shop = await open_shop(
        directory, default_world(orders=len(ORDERS)), replace={"payment": SlowPaymentService}
    )
    store = shop.saga_store

    async def table_now(ids: list[str]) -> list[dict[str, Any]]:
        wanted = set(ids)
        listed = await store.list_sagas(limit=len(ids) + 10)
        return sorted((_row(r) for r in listed if r.saga_id in wanted), key=lambda r: r["saga_id"])

    mid: list[dict[str, Any]] = []

    async def caught_mid_saga(ids: list[str]) -> bool:
        nonlocal mid
        mid = await table_now(ids)
        waiting = any(r["status"] == "running" and r["current_step"] == SLOW_STEP for r in mid)
        ended = any(r["status"] in ("completed", "compensated") for r in mid)
        return waiting and ended and len(mid) == len(ids)

    try:
        async with Runtime(lab_transport()).add(*shop.components()):
            ids = [(await shop.place(*order)).order_id for order in ORDERS]
            started = time.monotonic()
            await until(
                lambda: caught_mid_saga(ids),
                timeout=20,
                what=f"a saga ending while another waits at {SLOW_STEP}",
            )
            mid_at = round(time.monotonic() - started, 3)
            say.say(f"Reading the orchestrator's sagas table {mid_at}s in, while sagas run:")
            _show(say, "sagas, mid-saga", mid)
            say.say(f"(what `sagakit list --db {store.url}` shows from another terminal)")
            await outcomes([SagaHandle(i, store) for i in ids], timeout=30)
        final = await table_now(ids)
        left = await unsent(shop)
    finally:
        await shop.close()
    _show(say, "sagas, at the end", final)
    figures: dict[str, Any] = {
        "slow_step": SLOW_STEP,
        "slow_step_delay_s": SlowPaymentService.delay,
        "mid_saga_read_at_s": mid_at,
        "mid_saga": mid,
        "final": final,
    }
    problems = []
    if any(r["status"] in ("running", "compensating") for r in final):
        problems.append("a saga had not ended by the final read")
    problems.extend(never_published(left))
    figures["problems"] = problems
    return figures
