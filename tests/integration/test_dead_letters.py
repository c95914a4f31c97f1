"""The embedded dead-letter queue: durable, listable, and replayed through the outbox."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import text
from typer.testing import CliRunner, Result

from sagakit import Participant, Runtime, StepContext
from sagakit.cli.app import app
from sagakit.model.messages import Envelope, MessageKind, Outgoing, TransportMessage
from sagakit.stores import open_store
from sagakit.stores.dead_letters import SqlDeadLetters
from sagakit.stores.sql import SqlSagaStore
from sagakit.transports.memory import MemoryTransport


def command(saga: str, name: str, op: str) -> Outgoing:
    env = Envelope(
        message_id=f"{name}-{saga}",
        type=f"payment.{name}",
        kind=MessageKind.COMMAND,
        saga_id=saga,
        created_at=1.0,
        reply_to="sagakit.replies.none",
        step="charge",
        op=op,
        attempt=1,
        payload={"amount": 7},
    )  # type: ignore[arg-type]
    return Outgoing("sagakit.commands.payment", env)


def payments(store: SqlSagaStore, *, with_refund: bool) -> Participant:
    participant = Participant("payment", store)

    @participant.command("charge")
    async def charge(ctx: StepContext) -> None:
        await ctx.connection.execute(text("INSERT INTO money VALUES (:s, 1)"), {"s": ctx.saga_id})

    if with_refund:

        @participant.command("refund")
        async def refund(ctx: StepContext) -> None:
            await ctx.connection.execute(
                text("INSERT INTO money VALUES (:s, -1)"), {"s": ctx.saga_id}
            )

    return participant


async def run_until(store: SqlSagaStore, participant: Participant, done: object) -> None:
    transport = MemoryTransport(dead_letters=SqlDeadLetters(store))

    async def ignore(_deliveries: object) -> None:
        return None

    await transport.consume("sagakit.replies.none", ignore)  # no orchestrator in this test
    async with Runtime(transport, relay_poll=0.05).add(participant):
        for _ in range(200):
            if await done():  # type: ignore[operator]
                return
            await asyncio.sleep(0.02)
    raise AssertionError("the condition never came true")


async def test_dead_letters_survive_and_replay_through_the_outbox(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/payments.db"
    store = open_store(url)
    dead = SqlDeadLetters(store)
    async with store.unit() as unit:
        await unit.connection.execute(text("CREATE TABLE money (saga_id TEXT, amount INT)"))
        await unit.enqueue([command("s1", "charge", "action")])
        await unit.enqueue([command("s1", "refund", "compensation")])

    # An old deployment has no refund handler: the command is dead-lettered, with why.
    async def dead_lettered() -> bool:
        return await dead.depth() == 1

    await run_until(store, payments(store, with_refund=False), dead_lettered)
    [letter] = await dead.list()
    assert (letter.reason, letter.queue) == ("unknown_type", "sagakit.commands.payment")
    assert "no handler for 'payment.refund'" in letter.detail
    assert await store.unsent_count() == 0  # it was consumed, then set aside

    async def cli(*args: str) -> Result:
        # The CLI runs its own event loop, so it runs in a thread beside this one.
        return await asyncio.to_thread(CliRunner().invoke, app, list(args), env={"COLUMNS": "200"})

    listed = await cli("dlq", "list", "--db", url)
    assert listed.exit_code == 0, listed.output
    assert "unknown_type" in listed.output and letter.id[:12] in listed.output
    shown = await cli("dlq", "show", letter.id[:8], "--db", url)
    assert shown.exit_code == 0, shown.output
    assert '"amount": 7' in shown.output and "payment.refund" in shown.output
    missing = await cli("dlq", "show", "nope", "--db", url)
    assert missing.exit_code == 1 and "no dead letter" in missing.output
    replayed = await cli("dlq", "replay", "--all", "--db", url)
    assert replayed.exit_code == 0 and "replayed 1" in replayed.output
    assert await dead.depth() == 0 and await store.unsent_count() == 1

    # The fixed deployment handles the replayed command once.
    async def refunded() -> bool:
        async with store.unit() as unit:
            return await unit.connection.scalar(text("SELECT count(*) FROM money")) == 2

    await run_until(store, payments(store, with_refund=True), refunded)
    async with store.unit() as unit:
        rows = (await unit.connection.execute(text("SELECT * FROM money"))).all()
    assert rows == [("s1", 1), ("s1", -1)]  # charged once, refunded once
    purged = await cli("dlq", "purge", "--yes", "--db", url)
    assert purged.exit_code == 0 and "purged 0" in purged.output
    await store.close()


async def test_malformed_bytes_on_a_queue_are_dead_lettered_not_fatal(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/p.db")
    async with store.unit() as unit:
        await unit.connection.execute(text("CREATE TABLE money (saga_id TEXT, amount INT)"))
    dead = SqlDeadLetters(store)
    transport = MemoryTransport(dead_letters=dead)
    async with Runtime(transport).add(payments(store, with_refund=True)):
        junk = TransportMessage("sagakit.commands.payment", "junk-1", b"\x00\x01 not json")
        await asyncio.wait_for(transport.publish([junk]), 5)
    [letter] = await dead.list()
    assert letter.reason == "malformed" and letter.message.body == b"\x00\x01 not json"
    await store.close()
