"""The shop's starting world: customers, their accounts, the catalog and its stock.

Every service seeds its own share of it into its own database. The numbers are chosen
so that an order can fail for each classic reason: not enough stock, a declined card,
no credit left, or a region the carrier does not serve.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

#: Regions the carrier serves; an order to any other is refused at the pivot.
SUPPORTED_REGIONS = frozenset({"eu", "us", "apac"})


@dataclass(frozen=True, slots=True)
class Customer:
    id: str
    name: str
    email: str
    region: str
    balance_cents: int
    credit_limit_cents: int = 0
    card_declined: bool = False
    vip: bool = False
    flagged: bool = False  # the fraud screening turns this customer away


@dataclass(frozen=True, slots=True)
class Item:
    sku: str
    name: str
    price_cents: int
    stock: int


@dataclass(frozen=True, slots=True)
class World:
    customers: tuple[Customer, ...]
    items: tuple[Item, ...]

    def customer(self, customer_id: str) -> Customer:
        return next(c for c in self.customers if c.id == customer_id)

    def item(self, sku: str) -> Item:
        return next(i for i in self.items if i.sku == sku)


def default_world(*, orders: int = 100) -> World:
    """A world sized so ``orders`` good orders find stock and money enough."""
    depth = max(10, orders)
    customers = (
        Customer("c-ada", "Ada", "ada@example.com", "eu", 50_000_00, vip=True),
        Customer("c-grace", "Grace", "grace@example.com", "us", 50_000_00),
        Customer(
            "c-alan", "Alan", "alan@example.com", "apac", 50_000_00, credit_limit_cents=1_000_00
        ),
        Customer("c-edsger", "Edsger", "edsger@example.com", "eu", 50_000_00),
        Customer("c-barbara", "Barbara", "barbara@example.com", "us", 50_000_00),
        # the failures, one per cause
        Customer(
            "c-mallory", "Mallory", "mallory@example.com", "eu", 10_000_00, card_declined=True
        ),
        Customer("c-trudy", "Trudy", "trudy@example.com", "us", 5_00),
        Customer("c-penguin", "Pingu", "pingu@example.com", "antarctica", 10_000_00),
        Customer("c-eve", "Eve", "eve@example.com", "eu", 10_000_00, flagged=True),
    )
    items = (
        Item("lamp", "desk lamp", 25_00, 4 * depth),
        Item("chair", "office chair", 120_00, 2 * depth),
        Item("mug", "coffee mug", 8_50, 6 * depth),
        Item("globe", "antique globe", 310_00, 10),
    )
    return World(customers, items)


@dataclass(frozen=True, slots=True)
class OrderRequest:
    customer_id: str
    sku: str
    quantity: int
    expected: str = "completed"
    cause: str | None = None


def plan_orders(world: World, count: int, *, fail_rate: float, seed: int) -> list[OrderRequest]:
    """``count`` orders, about ``fail_rate`` of them set up to fail for one cause each."""
    rng = random.Random(seed)  # noqa: S311 - a seeded workload, not security
    good = [
        c
        for c in world.customers
        if not c.card_declined
        and not c.flagged
        and c.region in SUPPORTED_REGIONS
        and c.balance_cents > 100_00
    ]
    everyday = [i for i in world.items if i.sku != "globe"]
    causes = ["stock", "declined", "funds", "region", "fraud"]
    plan = []
    for _ in range(count):
        if rng.random() >= fail_rate:
            item = rng.choice(everyday)
            plan.append(OrderRequest(rng.choice(good).id, item.sku, rng.randint(1, 3)))
            continue
        cause = rng.choice(causes)
        if cause == "stock":
            plan.append(OrderRequest(rng.choice(good).id, "globe", 1000, "compensated", cause))
        elif cause == "declined":
            plan.append(OrderRequest("c-mallory", "mug", 1, "compensated", cause))
        elif cause == "funds":
            plan.append(OrderRequest("c-trudy", "chair", 1, "compensated", cause))
        elif cause == "region":
            plan.append(OrderRequest("c-penguin", "lamp", 1, "compensated", cause))
        else:
            plan.append(OrderRequest("c-eve", "mug", 2, "compensated", cause))
    return plan


def dollars(cents: int) -> str:
    return f"${cents / 100:,.2f}"
