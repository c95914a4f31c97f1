"""Labs 7, 8 and 10, run for real: timeouts and zombies, the overbooked flight, dynamic
routing. What each lab's figures claim is checked against the databases it left."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import select

from sagakit.stores import open_store
from sagakit.stores.schema import saga_locks
from sagakit.stores.sql import SqlSagaStore
from sagakit_shop.app import SAGA, embedded_urls, open_stores
from sagakit_shop.labs import overbooked_flight, routing
from sagakit_shop.labs.registry import LABS
from sagakit_shop.services.payment import payments


async def select_all(store: SqlSagaStore, query: Any) -> list[Any]:
    async with store.unit() as unit:
        return list(await unit.connection.execute(query))


async def test_lab7_the_orchestrator_gives_up_and_the_zombie_charge_is_refunded(
    tmp_path: Path,
) -> None:
    figures = await LABS[7].run(tmp_path, story=False)
    assert figures["problems"] == []
    assert figures["timed_out_after_s"] < figures["payment_sleep_s"]
    assert (figures["saga_status"], figures["order_status"]) == ("compensated", "rejected")
    stores = open_stores(embedded_urls(tmp_path))
    try:
        history = await stores[SAGA].history(figures["order_id"])
        types = [e.type for e in history]
        # the timeout came first, the compensation next, and the late success after both
        timed_out = types.index("StepTimedOut")
        assert timed_out < types.index("CompensationStarted")
        zombie = next(
            i
            for i, e in enumerate(history)
            if e.type == "ReplyIgnored" and "zombie" in json.loads(e.data)["why"]
        )
        assert zombie > timed_out
        assert types[-1] == "SagaCompensated"
        moved = await select_all(
            stores["payment"],
            select(payments).where(payments.c.order_id == figures["order_id"]),
        )
        assert Counter(p.kind for p in moved) == {"charge": 1, "refund": 1}
        assert sum(p.amount_cents for p in moved if p.kind == "charge") == sum(
            p.amount_cents for p in moved if p.kind == "refund"
        )
    finally:
        for store in stores.values():
            await store.close()


async def test_lab8_exactly_ten_fly_with_countermeasures_and_not_without(tmp_path: Path) -> None:
    figures = await LABS[8].run(tmp_path, story=False)
    assert figures["problems"] == []
    naive, careful = figures["without_countermeasures"], figures["with_countermeasures"]
    # without: the counter no longer matches the tickets, or seats flew empty, or both
    assert naive["lost_update"] != 0 or naive["turned_away_with_seats_empty"] > 0
    assert (careful["tickets"], careful["completed"], careful["compensated"]) == (10, 10, 90)
    airline = open_store(f"sqlite:///{tmp_path / 'airline.db'}")
    stores = open_stores(embedded_urls(tmp_path))
    try:
        ticketed = await select_all(airline, select(overbooked_flight.tickets))
        seats = [t.seat for t in ticketed]
        assert len(seats) == len(set(seats)) == overbooked_flight.SEATS
        # every seat's ticket is in the seats table too, and no lock outlived its saga
        booked = await select_all(
            airline,
            select(overbooked_flight.seats).where(
                overbooked_flight.seats.c.ticketed_to.isnot(None)
            ),
        )
        assert {(b.seat, b.ticketed_to) for b in booked} == {(t.seat, t.saga_id) for t in ticketed}
        assert await select_all(airline, select(saga_locks)) == []
        # nobody is charged without a seat: net money per traveller is the fare or nothing
        net: Counter[str] = Counter()
        for p in await select_all(stores["payment"], select(payments)):
            net[p.order_id.split("-", 1)[1]] += (
                p.amount_cents if p.kind == "charge" else -p.amount_cents
            )
        paid = {who for who, cents in net.items() if cents}
        assert paid == {t.saga_id for t in ticketed}
        assert all(net[who] == overbooked_flight.FARE_CENTS for who in paid)
        rows = await stores[SAGA].list_sagas(limit=200)
        assert Counter(r.status for r in rows) == {"completed": 10, "compensated": 90}
    finally:
        await airline.close()
        for store in stores.values():
            await store.close()


async def test_lab10_a_vip_skips_the_check_and_large_orders_wait_for_a_person(
    tmp_path: Path,
) -> None:
    figures = await LABS[10].run(tmp_path, story=False)
    assert figures["problems"] == []
    by_label = {o["label"]: o for o in figures["orders"]}
    vip, regular = by_label["a VIP's lamp"], by_label["a regular customer's chairs"]
    approved, rejected = (
        by_label["an antique globe collection"],
        by_label["another globe collection"],
    )
    stores = open_stores(embedded_urls(tmp_path))
    try:

        async def steps(order: dict[str, Any]) -> dict[str, list[str]]:
            out: dict[str, list[str]] = {}
            for e in await stores[SAGA].history(order["saga_id"]):
                step = json.loads(e.data).get("step")
                if step:
                    out.setdefault(step, []).append(e.type)
            return out

        assert (await steps(vip))["fraud_check"] == ["StepSkipped"]
        assert "StepRequested" in (await steps(regular))["fraud_check"]
        assert (await steps(regular))["manual_approval"] == ["StepSkipped"]
        assert "ApprovalRequested" in (await steps(approved))["manual_approval"]
        assert (approved["status"], rejected["status"]) == ("completed", "compensated")
        for order in (approved, rejected):
            history = await stores[SAGA].history(order["saga_id"])
            said = [json.loads(e.data) for e in history if e.type == "OperatorIntervened"]
            assert [s["who"] for s in said] == [routing.APPROVER]
        # each saga is pinned to the rule set published before it started
        for order in figures["orders"]:
            assert (await stores[SAGA].get(order["saga_id"])).rules_version == 1
    finally:
        for store in stores.values():
            await store.close()
