"""Typed step contracts: models in, models out, and bad data stopped at each boundary
with the step, the field and the problem named."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel, Field
from sqlalchemy import text

from sagakit import Participant, SagaDefinition, Step, StepContext, StepKind, StepRejected
from sagakit.engine.typed_handlers import as_handler
from sagakit.model.contracts import ContractError, check_start
from sagakit.testing import SagaHarness
from tests.sagas import FAST


class Reserve(BaseModel):
    sku: str
    quantity: int = Field(ge=1)


class Reserved(BaseModel):
    hold: str


class Charge(BaseModel):
    hold: str  # promised by reserve's reply
    amount_cents: int


TYPED = SagaDefinition(
    "typed",
    steps=[
        Step(
            name="reserve",
            participant="stock",
            command="reserve",
            compensation="release",
            command_model=Reserve,
            reply_model=Reserved,
            retry=FAST,
        ),
        Step(
            name="charge",
            participant="bank",
            command="charge",
            kind=StepKind.PIVOT,
            command_model=Charge,
            retry=FAST,
        ),
    ],
)

GOOD = {"sku": "lamp", "quantity": 2, "amount_cents": 500}


def participants(
    harness: SagaHarness, *, reserve: Any = None, charge: Any = None
) -> list[tuple[str, str, Any]]:
    """The saga's two participants (typed handlers unless others are given); returns the
    effects each handler recorded, in order."""
    seen: list[tuple[str, str, Any]] = []
    stock, bank = harness.participant("stock"), harness.participant("bank")

    async def typed_reserve(ctx: StepContext, cmd: Reserve) -> Reserved:
        seen.append(("reserve", ctx.op, cmd))
        await ctx.connection.execute(text("CREATE TABLE IF NOT EXISTS held (sku TEXT)"))
        await ctx.connection.execute(text("INSERT INTO held VALUES (:s)"), {"s": cmd.sku})
        return Reserved(hold=f"h-{cmd.sku}-{cmd.quantity}")

    async def release(ctx: StepContext, cmd: Reserve) -> None:
        seen.append(("release", ctx.op, cmd))

    async def typed_charge(ctx: StepContext, cmd: Charge) -> None:
        seen.append(("charge", ctx.op, cmd))
        if cmd.amount_cents > 1000:
            raise StepRejected("over the limit")

    stock.on("reserve", reserve or typed_reserve)
    stock.on("release", release)
    bank.on("charge", charge or typed_charge)
    return seen


async def test_typed_handlers_take_and_return_their_models() -> None:
    h = SagaHarness([TYPED])
    seen = participants(h)
    async with h:
        saga_id = await h.start("typed", GOOD)
        state = (await h.run_until_terminal([saga_id]))[saga_id]
    assert state.status == "completed"
    assert [(name, op) for name, op, _ in seen] == [("reserve", "action"), ("charge", "action")]
    assert seen[0][2] == Reserve(sku="lamp", quantity=2)
    assert seen[1][2] == Charge(hold="h-lamp-2", amount_cents=500)  # the reply, merged
    assert state.data["hold"] == "h-lamp-2"


async def test_a_refusal_in_a_typed_step_compensates_with_the_typed_undo() -> None:
    h = SagaHarness([TYPED])
    seen = participants(h)
    async with h:
        saga_id = await h.start("typed", {**GOOD, "amount_cents": 5000})
        state = (await h.run_until_terminal([saga_id]))[saga_id]
    assert state.status == "compensated"
    assert ("release", "compensation", Reserve(sku="lamp", quantity=2)) in seen


def test_start_data_is_checked_against_what_no_earlier_step_promises() -> None:
    with pytest.raises(ContractError) as bad:
        check_start(TYPED, {"sku": "lamp", "quantity": 0, "amount_cents": 5})
    assert (bad.value.step, bad.value.field) == ("reserve", "quantity")
    assert "greater than or equal to 1 (got 0)" in bad.value.problem
    assert str(bad.value).startswith("reserve: command field 'quantity': ")
    with pytest.raises(ContractError, match="charge: command field 'amount_cents': Field required"):
        check_start(TYPED, {"sku": "lamp", "quantity": 1})
    check_start(TYPED, GOOD)  # `hold` is reserve's to add: not asked of the start


async def test_a_start_that_breaks_a_contract_starts_no_saga() -> None:
    h = SagaHarness([TYPED])
    participants(h)
    async with h:
        with pytest.raises(ContractError, match="reserve: command field 'sku'"):
            await h.start("typed", {"quantity": 1, "amount_cents": 5}, saga_id="never")
        assert await h.store.heads(["never"]) == {}


async def test_a_command_that_breaks_the_model_is_refused_at_once_naming_the_field() -> None:
    # Data that passed the start (an untyped step put it there) is checked again when the
    # typed handler gets it; the refusal is final, so nothing is retried.
    loose = SagaDefinition(
        "loose",
        steps=[
            Step(
                name="reserve",
                participant="stock",
                command="reserve",
                compensation="release",
                retry=FAST,
            ),
            TYPED.steps[1],
        ],
    )

    async def untyped(ctx: StepContext) -> dict[str, Any]:
        return {"hold": 42}  # not a str

    h = SagaHarness([loose])
    seen = participants(h, reserve=untyped)
    async with h:
        saga_id = await h.start("loose", GOOD)
        state = (await h.run_until_terminal([saga_id]))[saga_id]
    assert state.status == "compensated"
    assert not [s for s in seen if s[0] == "charge"], "the typed handler never ran"
    charge = state.steps["charge"]
    assert charge.attempt == 1
    assert charge.error is not None
    assert charge.error.startswith("charge: command field 'hold': Input should be a valid string")
    assert "(got 42)" in charge.error


async def test_a_reply_the_handler_builds_wrong_refuses_the_step_and_rolls_back() -> None:
    async def sloppy(ctx: StepContext, cmd: Reserve) -> Reserved:
        await ctx.connection.execute(text("INSERT INTO held VALUES (:s)"), {"s": cmd.sku})
        return {"hold": None}  # type: ignore[return-value] - what a type checker catches

    h = SagaHarness([TYPED])
    participants(h, reserve=sloppy)
    async with h:
        async with h.store.unit() as unit:
            await unit.connection.execute(text("CREATE TABLE held (sku TEXT)"))
        saga_id = await h.start("typed", GOOD)
        state = (await h.run_until_terminal([saga_id]))[saga_id]
        async with h.store.unit() as unit:
            held = (await unit.connection.execute(text("SELECT count(*) FROM held"))).scalar()
    assert state.status == "compensated"
    assert state.steps["reserve"].error == (
        "reserve: reply field 'hold': Input should be a valid string (got None)"
    )
    assert held == 0, "the refused step's writes were rolled back with it"


async def test_a_reply_off_the_wire_that_breaks_the_model_is_dead_lettered_and_undone() -> None:
    # An untyped handler stands for a participant in another language: the participant
    # did the work and said so, with data the step's reply model refuses.
    async def foreign(ctx: StepContext) -> dict[str, Any]:
        return {"hold": ["not", "a", "string"]}

    h = SagaHarness([TYPED])
    seen = participants(h, reserve=foreign)
    async with h:
        saga_id = await h.start("typed", GOOD)
        state = (await h.run_until_terminal([saga_id]))[saga_id]
        letters = await h.memory.dead_letters.list()
    assert state.status == "compensated"
    reserve = state.steps["reserve"]
    assert reserve.attempt == 1, "a broken contract is not retried"
    assert reserve.error is not None
    assert reserve.error.startswith("reserve: reply field 'hold': Input should be a valid string")
    assert reserve.status == "compensated", "the work the participant reported is undone"
    assert [s[0] for s in seen] == ["release"]
    assert [(letter.reason, letter.queue) for letter in letters] == [
        ("contract", h.orchestrator.reply_queue)
    ]
    assert letters[0].detail == reserve.error


def test_a_typed_step_that_adds_nothing_refuses_a_reply_with_data() -> None:
    from sagakit.model.contracts import broken_reply
    from sagakit.model.messages import Envelope, MessageKind

    def reply(data: dict[str, Any]) -> Envelope:
        return Envelope(
            message_id="m",
            type="bank.charge.reply",
            kind=MessageKind.REPLY,
            saga_id="s",
            created_at=0,
            step="charge",
            op="action",
            payload={"ok": True, "data": data},
        )

    assert broken_reply(TYPED, reply({})) is None
    assert broken_reply(TYPED, reply({"x": 1})) == (
        "charge: reply: the step adds nothing, but the reply carries ['x']"
    )


def test_handlers_are_read_once_at_registration() -> None:
    async def untyped(ctx: StepContext) -> None:
        return None

    async def unannotated(ctx, cmd):  # type: ignore[no-untyped-def]
        return None

    async def defaulted(ctx: StepContext, what: str = "saved by a default") -> None:
        return None

    assert as_handler(untyped) is untyped
    assert as_handler(defaulted) is defaulted
    with pytest.raises(TypeError, match="must be annotated with the step's command model"):
        as_handler(unannotated)

    async def three(ctx, cmd, more):  # type: ignore[no-untyped-def]
        return None

    with pytest.raises(TypeError, match="takes 3 arguments"):
        Participant("p", None).on("x", three)  # type: ignore[arg-type]


async def test_a_start_message_that_breaks_a_contract_is_dead_lettered() -> None:
    # Built by hand, as a service in another language would: start_message() refuses it.
    from sagakit.engine.orchestrator import START_TYPE, start_message
    from sagakit.model.messages import Envelope, MessageKind, Outgoing, TransportMessage

    with pytest.raises(ContractError):
        start_message(TYPED, {"sku": "lamp"}, saga_id="refused")
    body = {"definition": "typed", "version": 1, "data": {"sku": "lamp", "quantity": "x"}}
    start = Envelope(
        message_id="start-1",
        type=START_TYPE,
        kind=MessageKind.COMMAND,
        saga_id="from-afar",
        created_at=0,
        payload=body,
    )
    h = SagaHarness([TYPED])
    participants(h)
    async with h:
        await h.memory.publish([TransportMessage.of(Outgoing(h.orchestrator.reply_queue, start))])
        for _ in range(100):
            letters = await h.memory.dead_letters.list()
            if letters:
                break
            await asyncio.sleep(0.02)
        assert await h.store.heads(["from-afar"]) == {}
    assert [(letter.reason, letter.message.message_id) for letter in letters] == [
        ("contract", "start-1")
    ]
    assert letters[0].detail.startswith("reserve: command field 'quantity': ")
