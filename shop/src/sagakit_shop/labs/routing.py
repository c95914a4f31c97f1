"""Lab 10: dynamic routing: the next step decided by rules at run time.

The shop's order saga carries two optional steps: the fraud check, which runs unless a
rule skips it, and a manual approval, which is skipped unless a rule requires it. The
rules are CEL expressions over the order's data, in ``shop/rules/order.toml``:

* VIP customers skip the fraud check;
* orders over $1,000 wait for a person.

The lab publishes that rule set (every saga is pinned to the version current when it
starts, so publishing new rules never changes a running saga), places three orders -
a VIP's lamp, a regular customer's chairs, and an antique globe collection - and, when
the large order is waiting, approves it as a person would with
``sagakit approve ORDER --note ...``. A fourth large order is rejected instead, and
compensates.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from sagakit import Runtime, UnknownSagaError, outcomes
from sagakit.engine.orchestrator import signal_message
from sagakit.engine.rules import RuleSet, publish
from sagakit_shop.app import Shop
from sagakit_shop.labs.kit import (
    Narrator,
    lab_transport,
    never_published,
    open_shop,
    table,
    unsent,
    until,
)
from sagakit_shop.saga import ORDER_SAGA, RULES_FILE
from sagakit_shop.world import default_world, dollars

TITLE = "Dynamic routing"
LESSON = (
    "Rules decide at run time which steps run: a VIP's order skips the fraud check, and "
    "orders over $1,000 wait for a person to approve (or reject) them."
)

#: (label, customer, sku, quantity, what a person answers if asked)
ORDERS: tuple[tuple[str, str, str, int, Literal["approve", "reject"] | None], ...] = (
    ("a VIP's lamp", "c-ada", "lamp", 1, None),
    ("a regular customer's chairs", "c-grace", "chair", 2, None),
    ("an antique globe collection", "c-edsger", "globe", 4, "approve"),
    ("another globe collection", "c-barbara", "globe", 5, "reject"),
)
APPROVER = "lab-approver"


async def run(directory: Path, *, story: bool) -> dict[str, Any]:
    say = Narrator(story=story)
    rules = RuleSet.parse(RULES_FILE.read_text(), source=str(RULES_FILE), definition=ORDER_SAGA)
    shop = await open_shop(directory, default_world(orders=len(ORDERS)))
    try:
        async with shop.saga_store.unit() as unit:
            await publish(unit, rules)
        say.say(f"Published rules v{rules.version} for the {rules.saga} saga:")
        say.show(
            table(
                "the rules",
                ["rule", "when", "then"],
                [(r.name, r.when, _then(r)) for r in rules.rules],
            )
        )
        async with Runtime(lab_transport()).add(*shop.components()):
            placed = [await shop.place(customer, sku, qty) for _, customer, sku, qty, _ in ORDERS]
            ids = [p.order_id for p in placed]
            waiting = [oid for oid, order in zip(ids, ORDERS, strict=True) if order[4] is not None]
            await until(
                lambda: _all_waiting(shop, waiting),
                timeout=30,
                what="the large orders waiting for approval",
            )
            while_waiting = {oid: (await shop.saga_store.get(oid)).status.value for oid in waiting}
            say.say(f"{len(waiting)} large order(s) wait at manual_approval; a person decides.")
            for oid, (label, *_, answer) in zip(ids, ORDERS, strict=True):
                if answer is None:
                    continue
                note = "checked with the customer" if answer == "approve" else "looks like fraud"
                say.say(f"{APPROVER} says {answer} to {label} ({oid}): {note}")
                async with shop.saga_store.unit() as unit:
                    await unit.enqueue([signal_message(oid, answer, who=APPROVER, note=note)])
            statuses = await outcomes([shop.saga(i) for i in ids], timeout=30)
        figures = await _figures(shop, ids, statuses, while_waiting, rules.version)
        figures["unsent_outbox_rows"] = await unsent(shop)
    finally:
        await shop.close()
    say.show(
        table(
            "what the rules decided",
            ["order", "amount", "vip", "fraud check", "approval", "ended"],
            [
                (
                    o["label"],
                    dollars(o["amount_cents"]),
                    "yes" if o["vip"] else "no",
                    o["fraud_check"],
                    o["approval"],
                    o["status"],
                )
                for o in figures["orders"]
            ],
        )
    )
    figures["problems"] = _problems(figures) + never_published(figures["unsent_outbox_rows"])
    return figures


def _then(rule: Any) -> str:
    parts = []
    if rule.skip:
        parts.append("skip " + ", ".join(rule.skip))
    if rule.require:
        parts.append("require " + ", ".join(rule.require))
    return "; ".join(parts)


async def _all_waiting(shop: Shop, ids: list[str]) -> bool:
    for saga_id in ids:
        try:
            history = await shop.saga_store.history(saga_id)
        except UnknownSagaError:
            return False  # its start is still on the way to the orchestrator
        if not any(e.type == "ApprovalRequested" for e in history):
            return False
    return True


async def _figures(
    shop: Shop,
    ids: list[str],
    statuses: Mapping[str, str],
    while_waiting: dict[str, str],
    rules_version: int,
) -> dict[str, Any]:
    orders = []
    for saga_id, (label, customer, *_rest, answer) in zip(ids, ORDERS, strict=True):
        history = await shop.saga_store.history(saga_id)
        state = await shop.saga_store.get(saga_id)
        steps = {
            json.loads(e.data).get("step"): e.type
            for e in history
            if e.type in ("StepSkipped", "StepRequested", "ApprovalRequested")
        }
        signals = [json.loads(e.data) for e in history if e.type == "OperatorIntervened"]
        orders.append(
            {
                "label": label,
                "saga_id": saga_id,
                "customer": customer,
                "vip": bool(state.data.get("vip")),
                "amount_cents": int(state.data["amount_cents"]),
                "rules_version": state.rules_version,
                "fraud_check": "skipped" if steps.get("fraud_check") == "StepSkipped" else "ran",
                "approval": (
                    "waited" if steps.get("manual_approval") == "ApprovalRequested" else "skipped"
                ),
                "status_while_waiting": while_waiting.get(saga_id),
                "answered": answer,
                "answered_by": [s.get("who") for s in signals],
                "status": statuses[saga_id],
            }
        )
    return {"rules_version": rules_version, "orders": orders}


def _problems(figures: dict[str, Any]) -> list[str]:
    problems = []
    for o in figures["orders"]:
        if o["rules_version"] != figures["rules_version"]:
            problems.append(f"{o['label']} ran under rules v{o['rules_version']}")
        if (o["fraud_check"] == "skipped") != o["vip"]:
            problems.append(f"{o['label']}: the fraud check {o['fraud_check']} (vip: {o['vip']})")
        large = o["amount_cents"] > 100_000
        if (o["approval"] == "waited") != large:
            problems.append(f"{o['label']}: approval {o['approval']} for {o['amount_cents']}")
        want = "compensated" if o["answered"] == "reject" else "completed"
        if o["status"] != want:
            problems.append(f"{o['label']} ended {o['status']}, not {want}")
        if o["answered"] and o["status_while_waiting"] != "running":
            problems.append(f"{o['label']} was {o['status_while_waiting']} while waiting")
        if o["answered"] and APPROVER not in o["answered_by"]:
            problems.append(f"{o['label']}: the log does not say who answered")
    return problems
