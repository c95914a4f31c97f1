"""Participants: inbox, barrier and business writes in one local transaction."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import event, text

from sagakit import Participant, StepContext, StepRejected
from sagakit.model.messages import Envelope, MessageKind, ReplyBody, TransportMessage, new_id
from sagakit.ports import Delivery
from sagakit.stores.sql import SqlSagaStore
from tests.integration.shop import create_effects, effects


def command(
    step: str,
    op: str,
    *,
    saga: str = "s1",
    attempt: int = 1,
    kind: str = "charge",
    mid: str | None = None,
    payload: dict[str, Any] | None = None,
) -> Delivery:
    env = Envelope(
        message_id=mid or new_id(),
        type=f"payment.{kind}",
        kind=MessageKind.COMMAND,
        saga_id=saga,
        created_at=1.0,
        reply_to="sagakit.replies.test",
        step=step,
        op=op,  # type: ignore[arg-type]
        attempt=attempt,
        payload=payload or {},
    )
    return Delivery(TransportMessage("sagakit.commands.payment", env.message_id, env.to_bytes()))


class Payments:
    """A payment participant that counts handler calls and records effects."""

    def __init__(self, store: SqlSagaStore) -> None:
        self.store = store
        self.calls: list[str] = []
        self.participant = Participant("payment", store)
        self.participant.on("charge", self.charge)
        self.participant.on("refund", self.refund)

    async def _effect(self, ctx: StepContext) -> None:
        await ctx.connection.execute(
            text("INSERT INTO effects (saga_id, step, op) VALUES (:s, :st, :op)"),
            {"s": ctx.saga_id, "st": ctx.step, "op": ctx.op},
        )

    async def charge(self, ctx: StepContext) -> dict[str, Any]:
        self.calls.append(f"charge:{ctx.attempt}")
        await self._effect(ctx)  # written before the refusal below: must be rolled back
        if ctx.payload.get("decline"):
            raise StepRejected("card declined", data={"code": "05"})
        if ctx.payload.get("explode") and ctx.attempt == 1:
            raise ConnectionError("gateway reset")
        return {"charge_id": f"ch-{ctx.saga_id}"}

    async def refund(self, ctx: StepContext) -> None:
        self.calls.append(f"refund:{ctx.attempt}")
        if ctx.payload.get("refund_fails") and ctx.attempt == 1:
            raise TimeoutError("bank offline")
        await self._effect(ctx)

    async def send(self, *deliveries: Delivery) -> list[ReplyBody]:
        return await send(self.participant, *deliveries)


async def send(participant: Participant, *deliveries: Delivery) -> list[ReplyBody]:
    """Hand ``deliveries`` to ``participant`` as one batch; the replies it sent, in order."""
    await participant.handle(list(deliveries))
    async with participant.store.claim_outbox(limit=100) as claim:
        claim.mark_sent([r.id for r in claim.rows])
        return [
            ReplyBody.model_validate(Envelope.from_bytes(r.message.body).payload)
            for r in claim.rows
        ]


async def test_one_message_delivered_ten_times_charges_once(store: SqlSagaStore) -> None:
    await create_effects(store)
    payments = Payments(store)
    delivery = command("charge", "action", mid="same-message")
    replies = [reply for _ in range(10) for reply in await payments.send(delivery)]
    assert payments.calls == ["charge:1"]
    assert [r.duplicate for r in replies] == [False] + [True] * 9
    assert {r.data["charge_id"] for r in replies} == {"ch-s1"}  # the stored reply, every time
    assert await effects(store) == {("s1", "charge", "action"): 1}


async def test_a_retry_under_a_new_message_id_still_finds_the_first_outcome(
    store: SqlSagaStore,
) -> None:
    await create_effects(store)
    payments = Payments(store)
    await payments.send(command("charge", "action", attempt=1))
    [again] = await payments.send(command("charge", "action", attempt=2))
    assert again.ok and again.duplicate
    assert payments.calls == ["charge:1"]


async def test_a_refusal_rolls_back_the_handlers_writes_and_is_remembered(
    store: SqlSagaStore,
) -> None:
    await create_effects(store)
    payments = Payments(store)
    [refused] = await payments.send(command("charge", "action", payload={"decline": True}))
    assert (refused.ok, refused.retryable, refused.reason) == (False, False, "card declined")
    assert refused.data == {"code": "05"}
    assert await effects(store) == {}
    [again] = await payments.send(command("charge", "action", attempt=2, payload={"decline": True}))
    assert (again.ok, again.duplicate) == (False, True)
    assert payments.calls == ["charge:1"]


async def test_an_unexpected_error_is_retryable_and_the_retry_runs(store: SqlSagaStore) -> None:
    await create_effects(store)
    payments = Payments(store)
    [failed] = await payments.send(command("charge", "action", payload={"explode": True}))
    assert (failed.ok, failed.retryable) == (False, True)
    assert "ConnectionError: gateway reset" in (failed.reason or "")
    [retried] = await payments.send(
        command("charge", "action", attempt=2, payload={"explode": True})
    )
    assert retried.ok and not retried.duplicate
    assert payments.calls == ["charge:1", "charge:2"]
    assert await effects(store) == {("s1", "charge", "action"): 1}


async def test_compensation_of_an_action_that_never_ran_is_a_recorded_no_op(
    store: SqlSagaStore,
) -> None:
    await create_effects(store)
    payments = Payments(store)
    [undo] = await payments.send(command("charge", "compensation", kind="refund"))
    assert undo.ok and undo.data == {"null_compensation": True}
    assert payments.calls == []  # the refund handler was never called
    # ...and the action, arriving late (a hanging action), does nothing either
    [late] = await payments.send(command("charge", "action"))
    assert (late.ok, late.duplicate) == (False, True)
    assert "compensated before it ran" in (late.reason or "")
    assert payments.calls == []
    assert await effects(store) == {}


async def test_compensation_after_the_action_undoes_it_once(store: SqlSagaStore) -> None:
    await create_effects(store)
    payments = Payments(store)
    await payments.send(command("charge", "action"))
    undo = command("charge", "compensation", kind="refund")
    await payments.send(undo)
    await payments.send(undo)
    await payments.send(command("charge", "compensation", kind="refund", attempt=2))
    assert payments.calls == ["charge:1", "refund:1"]
    assert await effects(store) == {
        ("s1", "charge", "action"): 1,
        ("s1", "charge", "compensation"): 1,
    }


async def test_a_compensation_that_waited_for_its_refused_action_finds_the_refusal(
    store: SqlSagaStore,
) -> None:
    """The action's transaction is still open (a slow step that timed out) when its
    compensation arrives: the compensation's claim waits for it, and must then see the
    refusal it committed, not run the refund for a charge that never happened."""
    await create_effects(store)
    payments = Payments(store)
    consumer = payments.participant.consumer
    refusal = ReplyBody(ok=False, reason="card declined").model_dump_json()
    async with store.unit() as action:
        assert await action.claim(consumer, ["s1/charge/action"]) == {"s1/charge/action"}
        await action.set_reply(consumer, "s1/charge/action", refusal)
        # In a batch with another saga's command, so that its inbox keys are claimed
        # for the whole batch at once.
        batch = (
            command("charge", "compensation", kind="refund"),
            command("charge", "action", saga="s2"),
        )
        undo = asyncio.create_task(payments.send(*batch))
        await asyncio.sleep(0.5)  # the compensation's batch is now waiting on this one
        assert not undo.done()
    reply, _ = await undo
    assert reply.ok and reply.data == {"null_compensation": True}
    assert payments.calls == ["charge:1"]  # the other saga's charge; no refund


async def test_compensation_of_a_refused_action_has_nothing_to_undo(store: SqlSagaStore) -> None:
    await create_effects(store)
    payments = Payments(store)
    await payments.send(command("charge", "action", payload={"decline": True}))
    [undo] = await payments.send(command("charge", "compensation", kind="refund"))
    assert undo.ok and undo.data == {"null_compensation": True}
    assert payments.calls == ["charge:1"]


async def test_a_failing_compensation_is_retryable_and_retried_for_real(
    store: SqlSagaStore,
) -> None:
    await create_effects(store)
    payments = Payments(store)
    await payments.send(command("charge", "action"))
    data = {"refund_fails": True}
    [first] = await payments.send(command("charge", "compensation", kind="refund", payload=data))
    assert (first.ok, first.retryable) == (False, True)
    [second] = await payments.send(
        command("charge", "compensation", kind="refund", attempt=2, payload=data)
    )
    assert second.ok and not second.duplicate
    assert payments.calls == ["charge:1", "refund:1", "refund:2"]


async def test_one_batch_of_every_case_ends_as_the_same_commands_sent_one_by_one(
    store: SqlSagaStore,
) -> None:
    """A batch claims its inbox keys together and stores its replies together; each
    command still gets the outcome it would get alone, in the order they came."""
    await create_effects(store)
    payments = Payments(store)
    await payments.send(command("charge", "action", saga="ran"))
    twice = command("charge", "action", saga="s1", mid="twice")
    replies = await payments.send(
        twice,
        twice,  # the same message twice in one batch
        command("charge", "compensation", kind="refund", saga="never"),  # null compensation
        command("charge", "action", saga="never"),  # ...and its action, hanging
        command("charge", "compensation", kind="refund", saga="ran"),
        command("charge", "action", saga="declined", payload={"decline": True}),
        command("charge", "action", saga="exploded", payload={"explode": True}),
        command("charge", "action", saga="both"),  # an action and its undoing, in order
        command("charge", "compensation", kind="refund", saga="both"),
    )
    seen = [(r.ok, r.duplicate, r.retryable, r.data, r.reason) for r in replies]
    assert seen == [
        (True, False, False, {"charge_id": "ch-s1"}, None),
        (True, True, False, {"charge_id": "ch-s1"}, None),
        (True, False, False, {"null_compensation": True}, None),
        (False, True, False, {}, "prevented: compensated before it ran"),
        (True, False, False, {}, None),
        (False, False, False, {"code": "05"}, "card declined"),
        (False, False, True, {}, "ConnectionError: gateway reset"),
        (True, False, False, {"charge_id": "ch-both"}, None),
        (True, False, False, {}, None),
    ]
    assert payments.calls == ["charge:1"] * 2 + ["refund:1"] + ["charge:1"] * 3 + ["refund:1"]
    assert await effects(store) == {
        ("ran", "charge", "action"): 1,
        ("ran", "charge", "compensation"): 1,
        ("s1", "charge", "action"): 1,
        ("both", "charge", "action"): 1,
        ("both", "charge", "compensation"): 1,
    }
    # the failed one forgot its key: its retry runs for real
    [retried] = await payments.send(
        command("charge", "action", saga="exploded", attempt=2, payload={"explode": True})
    )
    assert (retried.ok, retried.duplicate) == (True, False)


async def test_poison_messages_are_rejected_and_good_ones_still_run(store: SqlSagaStore) -> None:
    await create_effects(store)
    payments = Payments(store)
    good = command("charge", "action")
    junk = Delivery(TransportMessage("q", "m-junk", b"{not json"))
    unknown = command("charge", "action", kind="teleport", saga="s2")
    env = Envelope(
        message_id="m-reply", type="x", kind=MessageKind.REPLY, saga_id="s3", created_at=1.0
    )
    not_a_command = Delivery(TransportMessage("q", "m-reply", env.to_bytes()))
    no_step = Delivery(
        TransportMessage(
            "q",
            "m-ns",
            Envelope(
                message_id="m-ns",
                type="payment.charge",
                kind=MessageKind.COMMAND,
                saga_id="s4",
                created_at=1.0,
            ).to_bytes(),
        )
    )
    await payments.participant.handle([junk, unknown, good, not_a_command, no_step])
    assert junk.rejection is not None and junk.rejection[0] == "malformed"
    assert unknown.rejection is not None and unknown.rejection[0] == "unknown_type"
    assert "teleport" in unknown.rejection[1]
    assert not_a_command.rejection is not None and not_a_command.rejection[0] == "unknown_type"
    assert no_step.rejection is not None and no_step.rejection[0] == "schema"
    assert good.rejection is None
    assert await effects(store) == {("s1", "charge", "action"): 1}


async def test_a_held_write_goes_out_before_the_handlers_next_statement_in_its_savepoint(
    store: SqlSagaStore,
) -> None:
    await create_effects(store)
    participant = Participant("payment", store)
    seen: list[int] = []

    @participant.command("charge")
    async def charge(ctx: StepContext) -> None:
        await ctx.write(
            "INSERT INTO effects (saga_id, step, op) VALUES (:s, :st, :op)",
            {"s": ctx.saga_id, "st": ctx.step, "op": ctx.op},
        )
        seen.append(await ctx.connection.scalar(text("SELECT count(*) FROM effects")))
        if ctx.payload.get("decline"):
            raise StepRejected("card declined")

    await participant.handle([command("charge", "action", saga="kept")])
    await participant.handle([command("charge", "action", saga="gone", payload={"decline": True})])
    assert seen == [1, 2]  # each write ran before the handler's next statement
    assert await effects(store) == {("kept", "charge", "action"): 1}  # the refusal's was undone


class Statements:
    """Every statement sent on ``store``'s connections, and whether it was an
    executemany: what SQLAlchemy sends, and on PostgreSQL what goes to asyncpg itself
    (the hot inbox and outbox statements, and the grouped business writes)."""

    def __init__(self, store: SqlSagaStore) -> None:
        self.sent: list[tuple[str, bool]] = []
        self._engine = store.engine.sync_engine
        self._drivers: list[Any] = []
        event.listen(self._engine, "before_cursor_execute", self._seen)
        event.listen(self._engine.pool, "checkout", self._checked_out)

    def _seen(
        self, _conn: Any, _cursor: Any, sql: str, _params: Any, _ctx: Any, many: bool
    ) -> None:
        self.sent.append((" ".join(sql.split()[:3]).upper(), many))

    def _checked_out(self, dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        driver = getattr(dbapi_connection, "driver_connection", None)
        if hasattr(driver, "add_query_logger") and driver not in self._drivers:
            driver.add_query_logger(self._logged)
            self._drivers.append(driver)

    def _logged(self, record: Any) -> None:
        # asyncpg hands an executemany its rows as a list, anything else a tuple.
        self.sent.append(
            (" ".join(record.query.split()[:3]).upper(), isinstance(record.args, list))
        )

    def close(self) -> None:
        event.remove(self._engine, "before_cursor_execute", self._seen)
        event.remove(self._engine.pool, "checkout", self._checked_out)
        for driver in self._drivers:
            driver.remove_query_logger(self._logged)


async def test_a_batch_sends_its_held_writes_grouped_with_no_savepoints(
    store: SqlSagaStore,
) -> None:
    """Handlers that write only through ctx.write need no savepoint: their writes go out
    as one executemany after the last handler, and a refusal's write is dropped."""
    await create_effects(store)
    participant = Participant("payment", store)

    @participant.command("charge")
    async def charge(ctx: StepContext) -> None:
        await ctx.write(
            "INSERT INTO effects (saga_id, step, op) VALUES (:s, :st, :op)",
            {"s": ctx.saga_id, "st": ctx.step, "op": ctx.op},
        )
        if ctx.payload.get("decline"):
            raise StepRejected("card declined")

    watched = Statements(store)
    try:
        await participant.handle(
            [
                command("charge", "action", saga="a"),
                command("charge", "action", saga="refused", payload={"decline": True}),
                command("charge", "action", saga="b"),
                command("charge", "action", saga="c"),
            ]
        )
    finally:
        watched.close()
    inserts = [many for sql, many in watched.sent if sql == "INSERT INTO EFFECTS"]
    assert inserts == [True]  # one executemany for the three that went through
    assert not [sql for sql, _ in watched.sent if "SAVEPOINT" in sql]
    assert await effects(store) == {(s, "charge", "action"): 1 for s in "abc"}


async def test_a_lone_command_runs_without_a_savepoint_and_a_failure_undoes_it_whole(
    store: SqlSagaStore,
) -> None:
    """A savepoint is two round trips on every step, there only for the step that fails.
    A command alone in its transaction runs without one; when it fails after writing on
    the connection, the whole transaction rolls back and runs again with the failure as
    the step's outcome: its writes undone, its handler called once, its outcome kept."""
    await create_effects(store)
    payments = Payments(store)  # writes on ctx.connection, then refuses or raises
    watched = Statements(store)
    try:
        [charged] = await payments.send(command("charge", "action", saga="kept"))
        [refused] = await payments.send(
            command("charge", "action", saga="refused", payload={"decline": True})
        )
        [failed] = await payments.send(
            command("charge", "action", saga="exploded", payload={"explode": True})
        )
    finally:
        watched.close()
    assert not [sql for sql, _ in watched.sent if "SAVEPOINT" in sql]
    assert charged.ok and charged.data == {"charge_id": "ch-kept"}
    assert (refused.ok, refused.retryable, refused.reason) == (False, False, "card declined")
    assert (failed.ok, failed.retryable) == (False, True)
    assert payments.calls == ["charge:1"] * 3  # each handler once, the failures too
    assert await effects(store) == {("kept", "charge", "action"): 1}
    # the refusal is remembered as it was: a redelivery finds it, unrun
    [again] = await payments.send(
        command("charge", "action", saga="refused", attempt=2, payload={"decline": True})
    )
    assert (again.ok, again.duplicate, again.reason) == (False, True, "card declined")
    [retried] = await payments.send(
        command("charge", "action", saga="exploded", attempt=2, payload={"explode": True})
    )
    assert retried.ok and payments.calls[-1] == "charge:2"
    assert await effects(store) == {(s, "charge", "action"): 1 for s in ("kept", "exploded")}


async def test_a_grouped_write_that_fails_fails_its_own_step_and_no_other(
    store: SqlSagaStore,
) -> None:
    """The group's failure rolls the batch back; it runs again with that saga's writes
    sent one by one, each in its step's savepoint, so the failure reaches its step."""
    async with store.unit() as unit:
        await unit.connection.execute(
            text("CREATE TABLE charges (saga_id VARCHAR(128) PRIMARY KEY)")
        )
        await unit.connection.execute(text("INSERT INTO charges VALUES ('taken')"))
    participant = Participant("payment", store)
    runs: list[str] = []

    @participant.command("charge")
    async def charge(ctx: StepContext) -> None:
        runs.append(ctx.saga_id)
        await ctx.write("INSERT INTO charges (saga_id) VALUES (:s)", {"s": ctx.saga_id})

    commands = [command("charge", "action", saga=s, mid=f"m-{s}") for s in ("a", "taken", "b")]
    replies = await send(participant, *commands)
    assert [(r.ok, r.retryable) for r in replies] == [(True, False), (False, True), (True, False)]
    assert "IntegrityError" in (replies[1].reason or "")
    async with store.unit() as unit:
        kept = sorted(
            r[0] for r in await unit.connection.execute(text("SELECT saga_id FROM charges"))
        )
    assert kept == ["a", "b", "taken"]
    assert runs == ["a", "taken", "b"] * 2  # the batch ran twice: grouped, then one by one
