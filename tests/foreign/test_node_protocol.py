"""A participant written in Node.js from docs/protocol.md alone keeps the protocol:
its answers, its inbox and barrier, its refusals and its dead letters, over the real
RabbitMQ and PostgreSQL, with the messages coming one by one and in bundles."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from sagakit.model.messages import (
    Envelope,
    MessageKind,
    Op,
    Outgoing,
    ReplyBody,
    TransportMessage,
    command_queue,
    new_id,
)
from sagakit.ports import Delivery
from sagakit.stores import open_store
from sagakit.stores.sql import SqlSagaStore
from sagakit.transports.rabbitmq import RabbitTransport
from sagakit_shop.services.inventory import InventoryService, items, reservations
from sagakit_shop.world import default_world
from tests.conftest import AMQP_URL, open_rabbit
from tests.foreign.conftest import eventually, node_participant

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

REPLIES = "conformance.replies"
LAMP = {"order_id": "o-1", "number": 1, "sku": "lamp", "item": "desk lamp", "quantity": 2}


@pytest.fixture
async def inventory(pg_url: str) -> AsyncIterator[SqlSagaStore]:
    store = open_store(pg_url)
    await store.migrate()
    await InventoryService(store).install(default_world(orders=10))
    yield store
    await store.close()


def command(saga: str, op: Op, payload: dict[str, Any], *, name: str = "") -> Envelope:
    return Envelope(
        message_id=new_id(),
        type=f"inventory.{name or ('reserve' if op == 'action' else 'release')}",
        kind=MessageKind.COMMAND,
        saga_id=saga,
        created_at=time.time(),
        traceparent=f"00-{'ab' * 16}-{'cd' * 8}-01",
        reply_to=REPLIES,
        step="reserve_stock",
        op=op,
        attempt=1,
        payload=payload,
    )


def wire(envelopes: Sequence[Envelope]) -> list[TransportMessage]:
    return [TransportMessage.of(Outgoing(command_queue("inventory"), e)) for e in envelopes]


async def stock(store: SqlSagaStore, sku: str) -> tuple[int, int]:
    async with store.unit() as unit:
        row = (await unit.connection.execute(select(items).where(items.c.sku == sku))).one()
    return row.on_hand, row.reserved


class Answers:
    """The replies arriving on the test's reply queue."""

    def __init__(self) -> None:
        self.got: list[Envelope] = []

    async def __call__(self, batch: Sequence[Delivery]) -> None:
        self.got.extend(Envelope.from_bytes(d.message.body) for d in batch)

    async def wait(self, count: int) -> list[Envelope]:
        async def enough() -> bool:
            return len(self.got) >= count

        await eventually(enough)
        await asyncio.sleep(0.3)  # and nothing more comes
        return list(self.got)


async def test_the_node_participant_keeps_the_protocol(
    inventory: SqlSagaStore, pg_url: str, node_packages: Path, tmp_path: Path
) -> None:
    rabbit = await open_rabbit(AMQP_URL)
    try:
        replies = Answers()
        await rabbit.consume(REPLIES, replies)
        env = {"AMQP_URL": AMQP_URL, "SAGAKIT_PREFIX": rabbit.prefix, "DATABASE_URL": pg_url}
        before = await stock(inventory, "lamp")
        reserve = command("s-2", "action", LAMP)
        early_undo = command("s-1", "compensation", LAMP)  # its action never ran
        late_action = command("s-1", "action", LAMP)
        globes = {"order_id": "o-3", "sku": "globe", "item": "antique globe", "quantity": 1000}
        too_many = command("s-3", "action", {**LAMP, **globes})
        sloppy = command("s-4", "action", {**LAMP, "order_id": "o-4", "quantity": "two"})
        undo = command("s-2", "compensation", LAMP)
        async with node_participant("inventory.mjs", env) as node:
            # One bundle: the early compensation, the action it prevents, a reservation
            # and the same command delivered again.
            await rabbit.publish(wire([early_undo, late_action, reserve, reserve]))
            await replies.wait(4)
            after_reserve = await stock(inventory, "lamp")
            # One by one: a refusal, a command that breaks the step's model, the undo,
            # and three messages that can never be handled.
            for envelope in (too_many, sloppy, undo):
                await rabbit.publish(wire([envelope]))
            bad = wire([command("s-5", "action", LAMP, name="teleport")])[0]
            await rabbit.publish([bad])
            garbled = TransportMessage(command_queue("inventory"), "garbled-1", b"{not json")
            await rabbit.publish([garbled])
            answered = await replies.wait(7)
            letters = await dead_letters(rabbit, 2)
        assert any("(duplicate)" in line for line in node.lines)
    finally:
        await rabbit.teardown()
        await rabbit.close()

    by_id = {r.causation_id: r for r in answered}
    assert len(answered) == 7, [r.model_dump() for r in answered]
    for sent, reply in ((c, by_id[c.message_id]) for c in
                        (early_undo, late_action, reserve, too_many, sloppy, undo)):  # fmt: skip
        assert (reply.type, reply.kind, reply.saga_id) == (
            f"{sent.type}.reply",
            "reply",
            sent.saga_id,
        )
        assert (reply.step, reply.op, reply.attempt) == (sent.step, sent.op, sent.attempt)
        assert reply.traceparent is not None
        assert reply.traceparent.split("-")[1] == "ab" * 16, "the trace goes on"
        assert reply.traceparent.split("-")[2] != "cd" * 8, "under a span of its own"

    def body(sent: Envelope, which: int = 0) -> ReplyBody:
        found = [r for r in answered if r.causation_id == sent.message_id]
        return ReplyBody.model_validate(found[which].payload)

    assert body(early_undo) == ReplyBody(ok=True, data={"null_compensation": True})
    assert body(late_action) == ReplyBody(
        ok=False, reason="prevented: compensated before it ran", duplicate=True
    )
    first, again = body(reserve, 0), body(reserve, 1)
    assert first == ReplyBody(ok=True, data={"reserved": 2})
    assert again == first.model_copy(update={"duplicate": True})
    assert after_reserve == (before[0] - 2, before[1] + 2), "reserved once, not twice"
    assert body(too_many) == ReplyBody(
        ok=False, reason="not enough antique globe in stock for 1000"
    )
    assert body(sloppy) == ReplyBody(
        ok=False,
        reason="reserve_stock: command field 'quantity': a whole number >= 1 is required",
    )
    assert body(undo) == ReplyBody(ok=True)
    assert await stock(inventory, "lamp") == before, "the undo released what was held"
    async with inventory.unit() as unit:
        held = (await unit.connection.execute(select(reservations))).all()
    assert [(r.order_id, r.status) for r in held] == [("o-1", "released")]
    reasons = {letter.message.message_id: letter for letter in letters}
    assert reasons[bad.message_id].reason == "unknown_type"
    assert reasons[bad.message_id].queue == command_queue("inventory")
    assert reasons[bad.message_id].message.headers == bad.headers
    assert (reasons["garbled-1"].reason, reasons["garbled-1"].detail) == (
        "malformed",
        "body is not valid JSON",
    )


async def dead_letters(rabbit: RabbitTransport, count: int) -> list[Any]:
    async def enough() -> bool:
        return await rabbit.dead_letters.depth() >= count

    await eventually(enough)
    return await rabbit.dead_letters.list()


def test_the_how_to_quotes_the_participant_that_runs() -> None:
    """The how-to builds this participant step by step: its code is the code tested here."""
    howto = (Path(__file__).parents[2] / "docs" / "howto.md").read_text()
    program = (Path(__file__).parent / "inventory.mjs").read_text()
    quoted = re.findall(r"^```js\n(.*?)^```", howto, re.S | re.M)
    assert len(quoted) >= 6
    for block in quoted:
        assert block in program, block[:200]
