"""A person acting on sagas from the command line, through the saga store's outbox."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from typer.testing import CliRunner

from sagakit import Participant, StepContext
from sagakit.cli.app import app
from sagakit.testing import SagaHarness
from tests.integration.shop import create_effects, effects, order_participants
from tests.sagas import ORDER


async def cli(*args: str) -> tuple[int, str]:
    # The CLI runs its own event loop, so it runs in a thread beside this one.
    result = await asyncio.to_thread(
        CliRunner().invoke, app, list(args), env={"COLUMNS": "200", "USER": "ops"}
    )
    return result.exit_code, result.output


async def test_retry_and_resolve_from_the_command_line() -> None:
    warehouse = {"open": False}
    harness = SagaHarness([ORDER])
    inventory = Participant("inventory", harness.store, clock=harness.clock)

    @inventory.command("reserve")
    async def reserve(ctx: StepContext) -> None:
        await ctx.connection.execute(
            text("INSERT INTO effects VALUES (:s, 'reserve', 'action')"), {"s": ctx.saga_id}
        )

    @inventory.command("release")
    async def release(ctx: StepContext) -> None:
        if not warehouse["open"]:
            raise ConnectionError("warehouse offline")
        await ctx.connection.execute(
            text("INSERT INTO effects VALUES (:s, 'reserve', 'compensation')"), {"s": ctx.saga_id}
        )

    others = [p for p in order_participants(harness.store) if p.name != "inventory"]
    harness.add(inventory, *others)
    async with harness as h:
        await create_effects(h.store)
        stuck = await h.start("order", {"decline": True}, saga_id="stuck-1")
        other = await h.start("order", {"decline": True}, saga_id="stuck-2")
        states = await h.run_until_terminal([stuck, other])
        assert {s.status.value for s in states.values()} == {"needs_attention"}
        db = h.store.url

        code, out = await cli("resolve", "stuck-1", "--db", db)
        assert code == 2 and "--note" in out  # resolving needs a note

        warehouse["open"] = True
        code, out = await cli("retry", "stuck-1", "--db", db, "--note", "warehouse is back")
        assert code == 0, out
        assert "retry done; the saga is now compensating" in out
        code, out = await cli(
            "resolve", "stuck-2", "--db", db, "--note", "released by hand", "--who", "alice"
        )
        assert code == 0 and "resolve done" in out
        code, out = await cli("compensate", "stuck-2", "--db", db)
        assert code == 1 and "refused: the saga is resolved" in out
        code, out = await cli("retry", "nobody", "--db", db)
        assert code == 1 and "no saga with id" in out

        done = await h.run_until_terminal([stuck, other])
        assert done[stuck].status.value == "compensated"
        assert done[other].status.value == "resolved"
        assert done[other].reason == "resolved by alice: released by hand"
        assert (await effects(h.store))[("stuck-1", "reserve", "compensation")] == 1
        code, out = await cli("show", "stuck-1", "--db", db)
        assert "OperatorIntervened" in out and "ops: retry (warehouse is back)" in out
