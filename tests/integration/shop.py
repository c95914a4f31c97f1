"""A tiny order shop for integration tests: participants that record every effect."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import text

from sagakit import Participant, StepContext, StepRejected, TransientError
from sagakit.ports import SagaStore

EFFECTS = (
    "CREATE TABLE IF NOT EXISTS effects (saga_id VARCHAR(128), step VARCHAR(64), op VARCHAR(16))"
)


async def create_effects(store: Any) -> None:
    async with store.unit() as unit:
        await unit.connection.execute(text(EFFECTS))


async def effects(store: Any) -> Counter[tuple[str, str, str]]:
    async with store.unit() as unit:
        rows = await unit.connection.execute(text("SELECT saga_id, step, op FROM effects"))
        return Counter((r[0], r[1], r[2]) for r in rows)


def order_participants(store: SagaStore, *, flaky: set[str] | None = None) -> list[Participant]:
    """Participants for tests.sagas.ORDER. Payload flags make steps refuse:
    ``decline`` (charge), ``far`` (ship); step names in ``flaky`` fail once, transiently."""
    flaky = flaky or set()
    failed_once: set[tuple[str, str]] = set()

    async def record(ctx: StepContext) -> None:
        if ctx.step in flaky and (ctx.saga_id, ctx.step) not in failed_once and ctx.op == "action":
            failed_once.add((ctx.saga_id, ctx.step))
            raise TransientError(f"{ctx.step} backend hiccup")
        await ctx.connection.execute(
            text("INSERT INTO effects (saga_id, step, op) VALUES (:s, :st, :op)"),
            {"s": ctx.saga_id, "st": ctx.step, "op": ctx.op},
        )

    inventory = Participant("inventory", store)
    payment = Participant("payment", store)
    shipping = Participant("shipping", store)
    notification = Participant("notification", store)

    @inventory.command("reserve")
    async def reserve(ctx: StepContext) -> dict[str, Any]:
        await record(ctx)
        return {"reserved": True}

    @inventory.command("release")
    async def release(ctx: StepContext) -> None:
        await record(ctx)

    @payment.command("charge")
    async def charge(ctx: StepContext) -> None:
        if ctx.payload.get("decline"):
            raise StepRejected("card declined")
        await record(ctx)

    @payment.command("refund")
    async def refund(ctx: StepContext) -> None:
        await record(ctx)

    @shipping.command("ship")
    async def ship(ctx: StepContext) -> None:
        if ctx.payload.get("far"):
            raise StepRejected("unsupported region")
        await record(ctx)

    @notification.command("send")
    async def send(ctx: StepContext) -> None:
        await record(ctx)

    return [inventory, payment, shipping, notification]


def check_effects(statuses: dict[str, str], seen: Counter[tuple[str, str, str]]) -> list[str]:
    """Every completed saga did each step once; every compensated one nets to nothing."""
    problems = [f"{key} happened {n} times" for key, n in seen.items() if n > 1]
    for saga_id, status in statuses.items():
        done = {step for (s, step, op) in seen if s == saga_id and op == "action"}
        undone = {step for (s, step, op) in seen if s == saga_id and op == "compensation"}
        if status == "completed":
            if done != {"reserve", "charge", "ship", "notify"} or undone:
                problems.append(f"{saga_id} completed with actions {done} and undos {undone}")
        elif status == "compensated":
            if done & {"ship", "notify"} or done != undone:
                problems.append(f"{saga_id} compensated with actions {done} and undos {undone}")
        else:
            problems.append(f"{saga_id} ended {status}")
    return problems
