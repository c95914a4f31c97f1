"""What must hold once the faults stop and the shop has drained.

From ``sagakit_shop.verify``: money, stock, once, and every saga ended agreeing with its order.
Added here, because a fault run has more to prove:

- effects: what a saga's status says is what the services' tables show. A completed
  order holds its reservation, its charge, its shipment and its confirmation; a
  compensated one holds none of them (a reservation still held, a charge not refunded,
  a refund booked before the charge it undoes: each is an effect that outlived its
  compensation, or a compensation that ran before its action). No service holds
  anything for an order that does not exist, and no saga runs for one.
- outcomes: an order set up to fail never completes; an order that should go through
  completes, unless the saga gave up on a step that timed out while the nemesis held
  its service down (counted, not a violation: that is what timeouts are for).
- forward-only: every saga log folds as a legal forward history.
- outbox: every committed outbox row in every store was published.
- dead letters: no message ended in the dead-letter queue (nothing here is poison).
- outside: what reached the payment gateway (its own books) agrees with the shop's. At
  most one authorization per order, whatever was retried; a completed order's is held,
  for its amount, and is the one payment recorded; every authorization payment voided
  locally is voided at the gateway; none is for an order that does not exist. One kind
  of disagreement is counted, not a violation: a hold the gateway keeps for an undone
  order that payment has no record of (a charge whose transaction died after the call,
  undone before it ran again: the barrier's null compensation never reaches the
  handler, so nothing voids it; see concepts.md, "The inbox is the barrier").
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from sagakit.model.events import StoredEvent
from sagakit.stores.schema import saga_events, sagas
from sagakit.stores.sql import SqlSagaStore
from sagakit.testing import forward_only
from sagakit_shop.app import SAGA
from sagakit_shop.outside import Authorization, Gateway
from sagakit_shop.services.inventory import reservations
from sagakit_shop.services.notification import notifications
from sagakit_shop.services.order import orders
from sagakit_shop.services.payment import authorizations, payments
from sagakit_shop.services.shipping import shipments
from sagakit_shop.verify import verify

CHECKS = (
    "money",
    "stock",
    "once",
    "terminal",
    "effects",
    "outcomes",
    "forward_only",
    "outbox",
    "dead_letters",
    "outside",
)

#: How many examples of each violation a report keeps.
EXAMPLES = 20


@dataclass
class Findings:
    violations: dict[str, list[str]] = field(default_factory=lambda: {c: [] for c in CHECKS})
    sagas: Counter[str] = field(default_factory=Counter)
    orders: int = 0
    events: int = 0
    #: Orders that should have gone through but were compensated after a step timed out.
    gave_up: int = 0
    unsent: dict[str, int] = field(default_factory=dict)
    #: Authorizations at the payment gateway, and those held for undone orders that
    #: payment never recorded (the outside effect the barrier cannot undo).
    authorizations: int = 0
    held_for_undone: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(self.violations.values())

    def holds(self) -> dict[str, bool]:
        return {name: not found for name, found in self.violations.items()}

    def add(self, check: str, found: list[str]) -> None:
        self.violations.setdefault(check, []).extend(found)

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "invariants": self.holds(),
            "violations": {
                k: {"count": len(v), "examples": v[:EXAMPLES]}
                for k, v in self.violations.items()
                if v
            },
            "orders": self.orders,
            "sagas": dict(self.sagas),
            "saga_events_checked": self.events,
            "gave_up_after_timeouts": self.gave_up,
            "unsent_outbox_rows": self.unsent,
            "gateway_authorizations": self.authorizations,
            "held_at_gateway_for_undone_orders": {
                "count": len(self.held_for_undone),
                "examples": self.held_for_undone[:EXAMPLES],
            },
        }


async def check(
    stores: dict[str, SqlSagaStore],
    *,
    expected: dict[str, str],
    dead_letters: int,
    gateway: Gateway | None = None,
) -> Findings:
    found = Findings()
    report = await verify(stores)
    for name, listed in report.violations.items():
        found.add(name, listed)
    found.sagas, found.orders = report.sagas, report.orders
    books = await _books(stores)
    found.add("effects", _effects(books))
    found.add("outcomes", _outcomes(books, expected, found))
    found.events, illegal = await _forward_only(stores[SAGA])
    found.add("forward_only", illegal)
    found.unsent = {name: await store.unsent_count() for name, store in stores.items()}
    found.add(
        "outbox",
        [f"{n}: {c} committed row(s) never published" for n, c in found.unsent.items() if c],
    )
    if dead_letters:
        found.add("dead_letters", [f"{dead_letters} message(s) in the dead-letter queue"])
    if gateway is not None:
        recorded = {r.order_id: r for r in await _rows(stores["payment"], select(authorizations))}
        found.add("outside", _outside(books, recorded, list(gateway.by_id.values()), found))
    return found


def _outside(
    b: Books, recorded: dict[str, Any], held: list[Authorization], found: Findings
) -> list[str]:
    wrong: list[str] = []
    by_order: dict[str, list[Authorization]] = defaultdict(list)
    for authorization in held:
        by_order[authorization.order_id].append(authorization)
    found.authorizations = len(held)
    for order_id, made in sorted(by_order.items()):
        order, saga, mine = b.orders.get(order_id), b.sagas.get(order_id), recorded.get(order_id)
        if order is None:
            wrong.append(f"{order_id}: authorized at the gateway, but there is no such order")
            continue
        if len(made) > 1:
            wrong.append(f"{order_id}: {len(made)} authorizations at the gateway, not one")
            continue
        (auth,) = made
        status = saga.status if saga is not None else None
        if mine is not None and mine.authorization_id != auth.id:
            wrong.append(f"{order_id}: payment recorded {mine.authorization_id}, not {auth.id}")
        elif status == "completed" and (auth.status, auth.amount_cents) != (
            "authorized",
            order.amount_cents,
        ):
            wrong.append(
                f"{order_id}: completed, but the gateway holds {auth.status} "
                f"{auth.amount_cents} of {order.amount_cents} cents"
            )
        elif mine is not None and mine.status == "voided" and auth.status != "voided":
            wrong.append(f"{order_id}: voided by payment, still {auth.status} at the gateway")
        elif status == "compensated" and mine is None and auth.status == "authorized":
            found.held_for_undone.append(f"{order_id}: {auth.id} ({auth.amount_cents} cents)")
    for order_id, saga in b.sagas.items():
        if saga.status == "completed" and order_id not in by_order and order_id in b.net:
            wrong.append(f"{order_id}: completed and charged, but never authorized at the gateway")
    return wrong


@dataclass
class Books:
    """Every table the checks read, keyed by order id."""

    orders: dict[str, Any]
    sagas: dict[str, Any]
    net: dict[str, int]
    charged_at: dict[str, float]
    refunded_at: dict[str, float]
    reservations: dict[str, Any]
    shipped: set[str]
    told: set[str]


async def _rows(store: SqlSagaStore, query: Any) -> list[Any]:
    async with store.unit() as unit:
        return list(await unit.connection.execute(query))


async def _books(stores: dict[str, SqlSagaStore]) -> Books:
    net: dict[str, int] = defaultdict(int)
    charged_at: dict[str, float] = {}
    refunded_at: dict[str, float] = {}
    for p in await _rows(stores["payment"], select(payments)):
        if p.kind == "charge":
            net[p.order_id] += p.amount_cents
            charged_at[p.order_id] = p.at
        else:
            net[p.order_id] -= p.amount_cents
            refunded_at[p.order_id] = p.at
    return Books(
        orders={r.id: r for r in await _rows(stores["order"], select(orders))},
        sagas={r.saga_id: r for r in await _rows(stores[SAGA], select(sagas))},
        net=net,
        charged_at=charged_at,
        refunded_at=refunded_at,
        reservations={
            r.order_id: r for r in await _rows(stores["inventory"], select(reservations))
        },
        shipped={r.order_id for r in await _rows(stores["shipping"], select(shipments.c.order_id))},
        told={
            r.order_id
            for r in await _rows(stores["notification"], select(notifications.c.order_id))
        },
    )


def _effects(b: Books) -> list[str]:
    found = [
        f"{sid}: a saga for an order that does not exist" for sid in b.sagas if sid not in b.orders
    ]
    held = set(b.net) | set(b.reservations) | b.shipped | b.told
    found += [
        f"{oid}: effects for an order that does not exist" for oid in sorted(held - set(b.orders))
    ]
    for order_id, order in b.orders.items():
        saga = b.sagas.get(order_id)
        if saga is None:
            continue  # sagakit_shop.verify reports it
        if saga.status == "completed":
            found += _completed(b, order_id, order)
        elif saga.status == "compensated":
            found += _compensated(b, order_id)
    return found


def _completed(b: Books, order_id: str, order: Any) -> list[str]:
    missing = []
    held = b.reservations.get(order_id)
    if held is None or held.status != "reserved" or held.quantity != order.quantity:
        missing.append("its reservation")
    if b.net.get(order_id, 0) != order.amount_cents:
        missing.append(f"its charge (net {b.net.get(order_id, 0)} of {order.amount_cents})")
    if order_id not in b.shipped:
        missing.append("its shipment")
    if order_id not in b.told:
        missing.append("its confirmation")
    return [f"{order_id}: completed without {', '.join(missing)}"] if missing else []


def _compensated(b: Books, order_id: str) -> list[str]:
    left = []
    held = b.reservations.get(order_id)
    if held is not None and held.status == "reserved":
        left.append("stock still reserved")
    if b.net.get(order_id, 0) != 0:
        left.append(f"{b.net[order_id]} cents still charged")
    if order_id in b.shipped:
        left.append("a shipment")
    if order_id in b.told:
        left.append("a confirmation")
    charged, refunded = b.charged_at.get(order_id), b.refunded_at.get(order_id)
    if charged is not None and refunded is not None and refunded < charged:
        left.append("a refund booked before its charge")
    return [f"{order_id}: compensated, yet {', '.join(left)}"] if left else []


def _outcomes(b: Books, expected: dict[str, str], found: Findings) -> list[str]:
    wrong = []
    for order_id, must in expected.items():
        saga = b.sagas.get(order_id)
        if saga is None or saga.status in (must, "needs_attention"):
            continue
        if saga.status not in ("completed", "compensated"):
            continue  # not terminal: the terminal check reports it
        if must == "completed" and "timed out" in (saga.reason or ""):
            found.gave_up += 1
            continue
        wrong.append(f"{order_id}: should have {must}, but {saga.status} ({saga.reason})")
    return wrong


async def _forward_only(store: SqlSagaStore) -> tuple[int, list[str]]:
    """Fold every saga log, a batch of sagas at a time."""
    illegal: list[str] = []
    count = 0
    ids = sorted(r.saga_id for r in await _rows(store, select(sagas.c.saga_id)))
    for start in range(0, len(ids), 2000):
        chunk = ids[start : start + 2000]
        query = (
            select(saga_events)
            .where(saga_events.c.saga_id.in_(chunk))
            .order_by(saga_events.c.saga_id, saga_events.c.seq)
        )
        logs: dict[str, list[StoredEvent]] = defaultdict(list)
        for row in await _rows(store, query):
            logs[row.saga_id].append(
                StoredEvent(
                    row.saga_id, row.seq, row.type, row.schema_version, row.data, row.recorded_at
                )
            )
            count += 1
        for saga_id in chunk:
            illegal += forward_only(saga_id, logs.get(saga_id, []))
    return count, illegal
