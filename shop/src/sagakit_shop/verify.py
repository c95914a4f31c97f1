"""Check the shop's books across every service's database.

The invariants a user relies on, checked from the outside (this is an operator's
tool; no service reads another's tables):

- money: for every order, charged minus refunded is 0 or the order's total, and every
  account's balance is its opening balance minus charges plus refunds;
- stock: per item, on hand plus reserved is what it started with, nothing is
  negative, the reserved count matches the open reservations, and every shipment has
  its reservation;
- once: at most one charge, one refund, one reservation, one shipment and one
  confirmation per order;
- terminal: every saga has ended, and each order's status agrees with its saga.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from sagakit.stores.schema import sagas
from sagakit.stores.sql import SqlSagaStore
from sagakit_shop.app import SAGA
from sagakit_shop.services.inventory import items, reservations
from sagakit_shop.services.notification import notifications
from sagakit_shop.services.order import orders
from sagakit_shop.services.payment import accounts, payments
from sagakit_shop.services.shipping import shipments

INVARIANTS = ("money", "stock", "once", "terminal")


@dataclass
class Report:
    violations: dict[str, list[str]] = field(default_factory=lambda: {n: [] for n in INVARIANTS})
    sagas: Counter[str] = field(default_factory=Counter)
    orders: int = 0

    @property
    def ok(self) -> bool:
        return not any(self.violations.values())

    def holds(self) -> dict[str, bool]:
        return {name: not found for name, found in self.violations.items()}

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "orders": self.orders,
            "sagas": dict(self.sagas),
            "invariants": self.holds(),
            "violations": {k: v[:20] for k, v in self.violations.items() if v},
        }


async def _rows(store: SqlSagaStore, query: Any) -> list[Any]:
    async with store.unit() as unit:
        return list(await unit.connection.execute(query))


async def verify(stores: dict[str, SqlSagaStore]) -> Report:
    report = Report()
    order_rows = {r.id: r for r in await _rows(stores["order"], select(orders))}
    report.orders = len(order_rows)
    saga_rows = {r.saga_id: r for r in await _rows(stores[SAGA], select(sagas))}
    report.sagas.update(r.status for r in saga_rows.values())
    pay = await _rows(stores["payment"], select(payments))
    await _money(stores, order_rows, pay, report)
    await _stock(stores, report)
    shipped = await _rows(stores["shipping"], select(shipments))
    told = await _rows(stores["notification"], select(notifications))
    held = await _rows(stores["inventory"], select(reservations))
    _once(pay, held, shipped, told, report)
    _terminal(order_rows, saga_rows, report)
    return report


async def _money(
    stores: dict[str, SqlSagaStore], order_rows: dict[str, Any], pay: list[Any], report: Report
) -> None:
    net: dict[str, int] = defaultdict(int)
    moved: dict[str, int] = defaultdict(int)
    for p in pay:
        sign = 1 if p.kind == "charge" else -1
        net[p.order_id] += sign * p.amount_cents
        moved[p.customer_id] += sign * p.amount_cents
    for order_id, amount in net.items():
        order = order_rows.get(order_id)
        if order is None:
            report.violations["money"].append(f"payments for unknown order {order_id}")
        elif amount not in (0, order.amount_cents):
            report.violations["money"].append(
                f"{order_id}: charged minus refunded is {amount}, not 0 or {order.amount_cents}"
            )
    for account in await _rows(stores["payment"], select(accounts)):
        expected = account.initial_cents - moved.get(account.customer_id, 0)
        if account.balance_cents != expected:
            balance = account.balance_cents
            report.violations["money"].append(
                f"account {account.customer_id}: balance {balance}, books say {expected}"
            )


async def _stock(stores: dict[str, SqlSagaStore], report: Report) -> None:
    open_by_sku: dict[str, int] = defaultdict(int)
    held = {r.order_id: r for r in await _rows(stores["inventory"], select(reservations))}
    for r in held.values():
        if r.status == "reserved":
            open_by_sku[r.sku] += r.quantity
    for item in await _rows(stores["inventory"], select(items)):
        if item.on_hand < 0 or item.reserved < 0:
            report.violations["stock"].append(
                f"{item.sku}: negative stock {item.on_hand}/{item.reserved}"
            )
        if item.on_hand + item.reserved != item.initial:
            report.violations["stock"].append(
                f"{item.sku}: on hand {item.on_hand} + reserved {item.reserved} != {item.initial}"
            )
        holding = open_by_sku.get(item.sku, 0)
        if item.reserved != holding:
            report.violations["stock"].append(
                f"{item.sku}: {item.reserved} reserved but reservations hold {holding}"
            )
    for shipment in await _rows(stores["shipping"], select(shipments)):
        reservation = held.get(shipment.order_id)
        if (
            reservation is None
            or reservation.status != "reserved"
            or reservation.quantity != shipment.quantity
        ):
            report.violations["stock"].append(
                f"{shipment.order_id}: shipped without its reservation"
            )


def _once(
    pay: list[Any], held: list[Any], shipped: list[Any], told: list[Any], report: Report
) -> None:
    counts: Counter[tuple[str, str]] = Counter()
    counts.update((p.order_id, p.kind) for p in pay)
    counts.update((r.order_id, "reservation") for r in held)
    counts.update((s.order_id, "shipment") for s in shipped)
    counts.update((n.order_id, "confirmation") for n in told)
    for (order_id, what), n in counts.items():
        if n > 1:
            report.violations["once"].append(f"{order_id}: {n} x {what}")


def _terminal(order_rows: dict[str, Any], saga_rows: dict[str, Any], report: Report) -> None:
    agree = {"completed": {"approved"}, "compensated": {"rejected", "new"}}
    for order_id, order in order_rows.items():
        saga = saga_rows.get(order_id)
        if saga is None:
            report.violations["terminal"].append(f"{order_id}: no saga")
            continue
        if saga.status in ("running", "compensating"):
            report.violations["terminal"].append(f"{order_id}: saga still {saga.status}")
        elif saga.status in agree and order.status not in agree[saga.status]:
            report.violations["terminal"].append(
                f"{order_id}: saga {saga.status} but order {order.status}"
            )


async def in_flight(stores: dict[str, SqlSagaStore]) -> int:
    query = (
        select(func.count())
        .select_from(sagas)
        .where(sagas.c.status.in_(["running", "compensating"]))
    )
    async with stores[SAGA].unit() as unit:
        return int(await unit.connection.scalar(query) or 0)
