"""The chaos run's outside check: what reached the payment gateway, against the shop's
books. Each disagreement it exists to find is found, and the one it only counts is
counted."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from sagakit_shop.chaos.checks import Books, Findings, _outside
from sagakit_shop.outside import Authorization


def books(**statuses: str) -> Books:
    return Books(
        orders={o: SimpleNamespace(amount_cents=500) for o in statuses},
        sagas={o: SimpleNamespace(status=s) for o, s in statuses.items()},
        net={o: 500 for o, s in statuses.items() if s == "completed"},
        charged_at={},
        refunded_at={},
        reservations={},
        shipped=set(),
        told=set(),
    )


def auth(order_id: str, n: int = 1, status: str = "authorized", cents: int = 500) -> Authorization:
    return Authorization(
        id=f"auth_{order_id}_{n}",
        order_id=order_id,
        customer_id="c-ada",
        amount_cents=cents,
        status=status,  # type: ignore[arg-type]
        idempotency_key=f"{order_id}/charge/{n}",
    )


def recorded(order_id: str, status: str = "authorized", n: int = 1) -> Any:
    return SimpleNamespace(
        order_id=order_id, authorization_id=f"auth_{order_id}_{n}", status=status
    )


def test_books_that_agree_hold() -> None:
    found = Findings()
    b = books(o1="completed", o2="compensated", o3="compensated")
    mine = {"o1": recorded("o1"), "o2": recorded("o2", "voided")}
    held = [auth("o1"), auth("o2", status="voided")]  # o3 was refused before the gateway
    assert _outside(b, mine, held, found) == []
    assert (found.authorizations, found.held_for_undone) == (2, [])


def test_every_disagreement_is_found() -> None:
    found = Findings()
    b = books(o1="completed", o2="compensated", o3="completed", o4="completed", o5="completed")
    mine = {
        "o2": recorded("o2", "voided"),
        "o3": recorded("o3", n=2),
        "o4": recorded("o4"),
        "o5": recorded("o5"),
    }
    held = [
        auth("o1", 1), auth("o1", 2),  # twice for one order: the key did not hold
        auth("o2"),  # voided by payment, never at the gateway
        auth("o3", 1),  # payment recorded another authorization
        auth("o4", cents=5),  # the wrong amount held
        auth("ghost"),  # for an order that does not exist
    ]  # fmt: skip
    wrong = _outside(b, mine, held, found)
    assert [w.split(":")[0] for w in wrong] == ["ghost", "o1", "o2", "o3", "o4", "o5"]
    assert "2 authorizations" in wrong[1] and "never authorized" in wrong[5]


def test_a_hold_for_an_undone_order_payment_never_recorded_is_counted_not_failed() -> None:
    found = Findings()
    held = [auth("o1")]
    assert _outside(books(o1="compensated"), {}, held, found) == []
    assert found.held_for_undone == ["o1: auth_o1_1 (500 cents)"]
