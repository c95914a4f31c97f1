"""The orchestrator under bad input: poison replies, unknown sagas, corrupt logs."""

from __future__ import annotations

from sqlalchemy import text

from sagakit import Orchestrator
from sagakit.model.messages import Envelope, MessageKind, ReplyBody, TransportMessage, new_id
from sagakit.ports import Delivery
from sagakit.stores.sql import SqlSagaStore
from sagakit.testing import FakeClock
from tests.sagas import ORDER


def reply(
    saga_id: str,
    step: str = "reserve",
    *,
    ok: bool = True,
    payload: dict | None = None,
    kind: MessageKind = MessageKind.REPLY,
) -> Delivery:
    body = payload if payload is not None else ReplyBody(ok=ok).model_dump()
    env = Envelope(
        message_id=new_id(),
        type="inventory.reserve.reply",
        kind=kind,
        saga_id=saga_id,
        created_at=1.0,
        step=step,
        op="action",
        attempt=1,
        payload=body,
    )
    return Delivery(
        TransportMessage("sagakit.replies.orchestrator", env.message_id, env.to_bytes())
    )


async def test_bad_replies_are_rejected_with_reasons_while_good_ones_are_decided(
    store: SqlSagaStore,
) -> None:
    orchestrator = Orchestrator(store, [ORDER])
    await orchestrator.start("order", {}, saga_id="good")
    await orchestrator.start("order", {}, saga_id="bad")
    async with store.unit() as unit:
        await unit.connection.execute(
            text("UPDATE saga_events SET data = '{\"step\": 7}' WHERE saga_id = 'bad' AND seq = 2")
        )
    batch = [
        Delivery(TransportMessage("q", "m1", b"\xff\xfe not json")),
        Delivery(TransportMessage("q", "m2", b'{"message_id": "x"}')),
        reply("good", kind=MessageKind.EVENT),
        reply("good", payload={"ok": "perhaps", "surprise": 1}),
        reply("nobody"),
        reply("bad"),
        reply("good"),
        Delivery(TransportMessage("q", "m3", b"x" * 2_000_000)),
    ]
    await orchestrator.handle(batch)
    reasons = [d.rejection[0] if d.rejection else None for d in batch]
    assert reasons == [
        "malformed",
        "schema",
        "unknown_type",
        "schema",
        "unknown_saga",
        "corrupt_log",
        None,
        "oversize",
    ]
    corrupt = batch[5].rejection
    assert corrupt is not None and "saga bad" in corrupt[1] and "position 2" in corrupt[1]
    assert (await store.get("good")).steps["reserve"].status == "succeeded"


async def test_a_saga_with_a_corrupt_log_is_quarantined_by_the_timer_loop(
    store: SqlSagaStore,
) -> None:
    clock = FakeClock()
    orchestrator = Orchestrator(store, [ORDER], clock=clock)
    await orchestrator.start("order", {}, saga_id="bad")
    await orchestrator.start("order", {}, saga_id="fine")
    async with store.unit() as unit:
        await unit.connection.execute(
            text("UPDATE saga_events SET type = 'Nonsense' WHERE saga_id = 'bad' AND seq = 2")
        )
    clock.advance(31)  # both first steps are past their deadline
    assert await orchestrator.tick() == 1  # only the readable one is decided
    rows = {r.saga_id: r for r in await store.list_sagas()}
    assert rows["bad"].status == "needs_attention"
    assert "position 2" in (rows["bad"].reason or "")
    assert await orchestrator.tick() == 0  # and it is not picked up again and again


async def test_a_duplicate_reply_is_decided_once(store: SqlSagaStore) -> None:
    orchestrator = Orchestrator(store, [ORDER])
    await orchestrator.start("order", {}, saga_id="s")
    delivery = reply("s")
    await orchestrator.handle([delivery, delivery])
    await orchestrator.handle([delivery])
    types = [e.type for e in await store.history("s")]
    assert types == ["SagaStarted", "StepRequested", "StepSucceeded", "StepRequested"]


async def test_a_service_starts_a_saga_from_its_own_transaction(store: SqlSagaStore) -> None:
    orchestrator = Orchestrator(store, [ORDER])
    start = orchestrator.start_message("order", {"amount": 3}, saga_id="o-1", key="order 1")
    # the order service enqueues it beside its own order row; the relay delivers it
    delivery = Delivery(
        TransportMessage(start.destination, start.envelope.message_id, start.envelope.to_bytes())
    )
    await orchestrator.handle([delivery, delivery])
    again = orchestrator.start_message("order", {"amount": 3}, saga_id="o-1")
    await orchestrator.handle(
        [Delivery(TransportMessage("q", again.envelope.message_id, again.envelope.to_bytes()))]
    )
    state = await store.get("o-1")
    assert (state.key, state.data) == ("order 1", {"amount": 3})
    assert [e.type for e in await store.history("o-1")] == ["SagaStarted", "StepRequested"]
    other = Orchestrator(store, [])
    bad = start.envelope.model_copy(update={"message_id": "x", "saga_id": "o-2"})
    unknown = Delivery(TransportMessage("q", "x", bad.to_bytes()))
    await other.handle([unknown])
    assert unknown.rejection is not None and unknown.rejection[0] == "unknown_definition"
