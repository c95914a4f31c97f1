"""The saga labs, run for real.

Each lab runs in process in its own directory; what a learner reads in its figures is
then checked against the databases it left behind (rows, logs, outboxes), not against
the figures themselves. The ``sagakit lab`` commands run once each as a user types them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from sagakit.model.events import StepFailed, decode
from sagakit.model.transitions import fold_stored
from sagakit.stores import open_store
from sagakit.stores.schema import saga_inbox, saga_outbox, saga_snapshots
from sagakit.stores.sql import SqlSagaStore
from sagakit_shop.app import SAGA, embedded_urls, open_stores
from sagakit_shop.labs import (
    compensation,
    event_log,
    idempotent_consumer,
    outbox_child,
    state_table,
)
from sagakit_shop.labs.kit import open_shop
from sagakit_shop.labs.registry import LABS
from sagakit_shop.saga import ORDER_SAGA
from sagakit_shop.services.inventory import items, reservations
from sagakit_shop.services.order import orders
from sagakit_shop.services.payment import accounts, payments
from sagakit_shop.world import default_world
from tests.e2e.helpers import no_traceback, sagakit, sagakit_many


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[dict[str, SqlSagaStore]]:
    """The stores a lab run in ``tmp_path`` leaves behind, opened afresh."""
    opened = open_stores(embedded_urls(tmp_path))
    yield opened
    for store in opened.values():
        await store.close()


async def select_all(store: SqlSagaStore, query: Any) -> list[Any]:
    async with store.unit() as unit:
        return list(await unit.connection.execute(query))


# ---------------------------------------------------------------------------- lab 1


async def test_lab1_one_order_flows_event_by_event_to_completed(
    tmp_path: Path, stores: dict[str, SqlSagaStore]
) -> None:
    figures = await LABS[1].run(tmp_path, story=False)
    order_id = figures["order_id"]
    # optional steps never run choreographed: no one is there to evaluate routing rules
    choreographed = [step for step in ORDER_SAGA.steps if not step.optional]
    steps = [step.name for step in choreographed]
    assert figures["events"] == ["order.started", *(f"order.{s}.succeeded" for s in steps)]
    # each step ran because of the event just before it, in the service that owns it
    chain = [(r["event"], r["service"], r["step"]) for r in figures["reactions"]]
    triggers = ["order.started", *(f"order.{s}.succeeded" for s in steps[:-1])]
    owners = [step.participant for step in choreographed]
    assert chain == list(zip(triggers, owners, steps, strict=True))
    # the tracker's log and the order service agree with what the lab reports
    history = await stores[SAGA].history(order_id)
    assert (await stores[SAGA].statuses([order_id]))[order_id] == figures["saga_status"]
    assert figures["saga_status"] == "completed"
    assert [e.type for e in history][-1] == "SagaCompleted"
    assert figures["saga_log_events"] == len(history)
    order = await select_all(stores["order"], select(orders).where(orders.c.id == order_id))
    assert order[0].status == figures["order_status"] == "approved"


async def test_a_choreographed_lab_leaves_every_outbox_row_published(
    tmp_path: Path, stores: dict[str, SqlSagaStore]
) -> None:
    await LABS[1].run(tmp_path, story=False)
    assert {name: await s.unsent_count() for name, s in stores.items()} == dict.fromkeys(stores, 0)


# ---------------------------------------------------------------------------- lab 2


async def test_lab2_stock_failure_refunds_the_charge_and_rejects_the_order(
    tmp_path: Path, stores: dict[str, SqlSagaStore]
) -> None:
    figures = await LABS[2].run(tmp_path, story=False)
    order_id = figures["order_id"]
    saga = compensation.PREPAID_ORDER.name
    assert figures["events"] == [
        f"{saga}.started",
        f"{saga}.create_order.succeeded",
        f"{saga}.charge_payment.succeeded",
        f"{saga}.reserve_stock.failed",
        f"{saga}.charge_payment.compensated",
        f"{saga}.create_order.compensated",
    ]
    moved = await select_all(
        stores["payment"], select(payments).where(payments.c.order_id == order_id)
    )
    assert [(p.kind, p.amount_cents) for p in sorted(moved, key=lambda p: p.id)] == [
        ("charge", figures["charged_cents"]),
        ("refund", figures["refunded_cents"]),
    ]
    widget = compensation.WIDGET
    assert figures["charged_cents"] == figures["refunded_cents"] == 1000 * widget.price_cents
    account = (
        await select_all(
            stores["payment"],
            select(accounts).where(accounts.c.customer_id == compensation.CUSTOMER),
        )
    )[0]
    assert account.balance_cents == account.initial_cents == figures["balance_after_cents"]
    stock = (await select_all(stores["inventory"], select(items).where(items.c.sku == "widget")))[0]
    assert (stock.on_hand, stock.reserved) == (widget.stock, 0)
    assert figures["stock_on_hand_after"] == widget.stock
    assert await select_all(stores["inventory"], select(reservations)) == []
    order = (await select_all(stores["order"], select(orders).where(orders.c.id == order_id)))[0]
    assert order.status == figures["order_status"] == "rejected"
    assert "not enough CoolWidget" in order.reason
    assert (await stores[SAGA].statuses([order_id]))[order_id] == "compensated"
    assert figures["saga_status"] == "compensated"


# ---------------------------------------------------------------------------- lab 3


async def test_lab3_reads_the_state_table_mid_saga_and_at_the_end(
    tmp_path: Path, stores: dict[str, SqlSagaStore]
) -> None:
    figures = await LABS[3].run(tmp_path, story=False)
    assert figures["problems"] == []
    mid, final = figures["mid_saga"], figures["final"]
    assert {r["saga_id"] for r in mid} == {r["saga_id"] for r in final}
    assert len(final) == len(state_table.ORDERS)
    waiting = [r for r in mid if r["status"] == "running" and r["current_step"] == "charge_payment"]
    assert waiting, mid
    assert any(r["status"] in ("completed", "compensated") for r in mid), mid
    # every mid-saga row is what the saga's own log said after that many events
    for row in mid:
        history = await stores[SAGA].history(row["saga_id"])
        then = fold_stored(row["saga_id"], history[: row["events"]])
        assert (then.status.value, then.current_step) == (row["status"], row["current_step"])
        assert len(history) > row["events"] or then.status.terminal
    # the final rows are the projection as it stands, and every saga ended as planned
    now = {r.saga_id: r for r in await stores[SAGA].list_sagas()}
    for row in final:
        assert (now[row["saga_id"]].status, now[row["saga_id"]].version) == (
            row["status"],
            row["events"],
        )
        assert row["current_step"] is None
    placed = await select_all(stores["order"], select(orders))
    by_customer = {o.customer_id: o.id for o in placed}
    statuses = {r["saga_id"]: r for r in final}
    assert "stock" in statuses[by_customer["c-grace"]]["reason"]
    assert "declined" in statuses[by_customer["c-mallory"]]["reason"]
    expected = {"c-ada": "completed", "c-grace": "compensated"}
    expected |= {"c-mallory": "compensated", "c-edsger": "completed"}
    assert {c: statuses[i]["status"] for c, i in by_customer.items()} == expected


# ---------------------------------------------------------------------------- lab 4


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def payment_log() -> Iterator[list[str]]:
    """The payment service's log lines at info, however logging was configured before."""
    handler = Lines()
    logger = logging.getLogger("shop.payment")
    saved = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield handler.lines
    logger.removeHandler(handler)
    logger.level, logger.propagate = saved


async def test_lab4_ten_deliveries_charge_once(
    tmp_path: Path, stores: dict[str, SqlSagaStore], payment_log: list[str]
) -> None:
    figures = await LABS[4].run(tmp_path, story=False)
    assert figures["problems"] == []
    assert figures["deliveries"] == sum(figures["handled_by"].values()) == 10
    assert all(figures["handled_by"].values())  # both competing consumers took some
    order_id = idempotent_consumer.ORDER_ID
    moved = await select_all(
        stores["payment"], select(payments).where(payments.c.order_id == order_id)
    )
    assert [(p.kind, p.amount_cents) for p in moved] == [("charge", idempotent_consumer.AMOUNT)]
    assert figures["charges"] == 1
    account = (
        await select_all(
            stores["payment"],
            select(accounts).where(accounts.c.customer_id == idempotent_consumer.CUSTOMER),
        )
    )[0]
    assert account.initial_cents - account.balance_cents == idempotent_consumer.AMOUNT
    assert figures["balance_moved_cents"] == idempotent_consumer.AMOUNT
    inbox = await select_all(stores["payment"], select(saga_inbox))
    assert [row.key for row in inbox] == [f"{order_id}/charge_payment/action"]
    assert figures["duplicates"] == 9 == sum("duplicate ignored" in line for line in payment_log)
    assert sum(line.startswith("Charged ") for line in payment_log) == 1


# ---------------------------------------------------------------------------- lab 5


async def test_a_killed_order_service_leaves_its_message_committed_and_unsent(
    tmp_path: Path, stores: dict[str, SqlSagaStore]
) -> None:
    shop = await open_shop(tmp_path, default_world(orders=1))
    await shop.close()
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        outbox_child.__name__,
        str(tmp_path),
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(child.communicate(), 60)
    assert child.returncode == -9, err.decode()
    placed = await select_all(stores["order"], select(orders))
    assert [o.status for o in placed] == ["new"]
    assert await stores["order"].unsent_count() == 1
    assert await stores[SAGA].list_sagas() == []  # the saga never started


async def test_lab5_the_restarted_relay_publishes_what_the_crash_left(
    tmp_path: Path, stores: dict[str, SqlSagaStore]
) -> None:
    figures = await LABS[5].run(tmp_path, story=False)
    assert figures["problems"] == []
    assert figures["aborted_transaction_left"] == {"orders": 0, "outbox_rows": 0}
    assert figures["child_exit_code"] == -9
    assert figures["unsent_after_crash"] >= 1
    assert figures["unsent_after_crash_by_store"]["order"] >= 1
    for name, store in stores.items():
        assert await store.unsent_count() == 0, name
    assert figures["unsent_after_restart"] == 0
    placed = await select_all(stores["order"], select(orders))
    assert [(o.id, o.status) for o in placed] == [(figures["order_id"], "approved")]
    assert figures["order_status"] == "approved"
    assert await stores[SAGA].statuses([placed[0].id]) == {placed[0].id: "completed"}
    assert figures["saga_status"] == "completed"
    start = await select_all(
        stores["order"], select(saga_outbox).where(saga_outbox.c.type == "sagakit.start")
    )
    assert len(start) == 1 and start[0].sent_at is not None
    charged = await select_all(stores["payment"], select(payments))
    assert [p.kind for p in charged] == ["charge"]


# ---------------------------------------------------------------------------- lab 6


async def test_lab6_replays_snapshots_and_upcasts_the_saga_log(
    tmp_path: Path, stores: dict[str, SqlSagaStore]
) -> None:
    figures = await LABS[6].run(tmp_path, story=False)
    assert figures["problems"] == []
    replay, snapshot, upcast = figures["replay"], figures["snapshot"], figures["upcast"]
    history = await stores[SAGA].history(replay["saga_id"])
    assert replay["events"] == len(history)
    assert fold_stored(replay["saga_id"], history).status.value == replay["status"] == "completed"

    long_id = snapshot["saga_id"]
    long_log = await stores[SAGA].history(long_id)
    busy = [
        e
        for e in map(decode, long_log)
        if isinstance(e, StepFailed) and e.step == "notify_customer"
    ]
    assert len(busy) == event_log.BUSY_TIMES
    assert snapshot["events_in_log"] == snapshot["events_read_without_snapshot"] == len(long_log)
    snaps = await select_all(
        stores[SAGA], select(saga_snapshots).where(saga_snapshots.c.saga_id == long_id)
    )
    assert [s.version for s in snaps] == [snapshot["snapshot_at"]]
    assert snapshot["snapshot_at"] >= stores[SAGA].snapshot_every
    assert snapshot["events_read_with_snapshot"] == len(long_log) - snapshot["snapshot_at"]
    assert snapshot["same_state"] is True
    assert fold_stored(long_id, long_log).status.value == "completed"

    legacy = open_store(f"sqlite:///{tmp_path / event_log.LEGACY_DB}.db")
    try:
        stored = (await legacy.history(upcast["saga_id"]))[2]
        state = await legacy.get(upcast["saga_id"])
    finally:
        await legacy.close()
    assert (
        (stored.type, stored.schema_version)
        == ("StepFailed", upcast["stored_version"])
        == (
            "StepFailed",
            1,
        )
    )
    event = decode(stored)
    assert isinstance(event, StepFailed) and event.schema_version == upcast["read_version"] == 2
    assert (event.reason, event.retryable) == ("customer blocked", False)
    assert state.steps["create_order"].error == upcast["step_error_in_state"] == "customer blocked"


# ---------------------------------------------------------------------------- the commands


def test_lab_list_shows_every_lab_and_its_lesson(tmp_path: Path) -> None:
    done = sagakit("lab", "list", cwd=tmp_path)
    assert done.code == 0, done
    lines = done.out.splitlines()
    for number, lab in LABS.items():
        row = next(line for line in lines if line.split("│")[1:2] == [f" {number} ".ljust(4)])
        assert lab.title[:20] in row
        assert lab.lesson[:15] in row
    assert sorted(LABS) == list(range(1, 11))


def test_lab_run_json_prints_one_object_and_keeps_other_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    done = sagakit("lab", "run", "4", "--json", "--dir", ".", cwd=tmp_path)
    assert done.code == 0, done
    figures = json.loads(done.out)  # the whole of stdout is one JSON object
    assert (figures["deliveries"], figures["charges"], figures["duplicates"]) == (10, 1, 9)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert (tmp_path / "payment.db").exists()


def test_lab_run_tells_the_story(tmp_path: Path) -> None:
    four, five = sagakit_many(("lab", "run", "4"), ("lab", "run", "5"), cwd=tmp_path)
    assert four.code == 0, four
    assert four.err.count("[payment] payment.charge for charge_payment: duplicate ignored") == 9
    assert four.err.count("[payment] Charged $50.00") == 1
    assert "duplicates" in four.out and (tmp_path / ".sagakit/labs/4/payment.db").exists()
    assert five.code == 0, five
    story = five.err
    crash = story.index("crashing (SIGKILL) before any relay publishes")
    assert crash < story.index("killed by SIGKILL") < story.index("[order] Order #101 approved")
    assert "sagakit.start" in story
    assert "sagakit list --db sqlite:///.sagakit/labs/5/saga.db" in five.out


def test_unknown_labs_are_refused_clearly(tmp_path: Path) -> None:
    zero, eleven, word = sagakit_many(
        ("lab", "run", "0"),
        ("lab", "run", "11"),
        ("lab", "run", "x"),
        cwd=tmp_path,
    )
    for refused in (zero, eleven, word):
        assert refused.code == 2, refused
        assert "Invalid value for 'number'" in refused.err
    for result in (zero, eleven, word):
        no_traceback(result)
    assert not (tmp_path / ".sagakit").exists()
