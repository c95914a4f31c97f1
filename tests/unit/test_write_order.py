"""Held writes go out in an order that depends only on the rows they touch, so two
transactions (in two processes) writing the same rows lock them in the same order."""

from __future__ import annotations

import itertools
import random

import pytest

from sagakit.engine.batching import row_identity, write_order

DEBIT = "UPDATE accounts SET balance = balance - :amount WHERE id = :id AND balance >= :amount"
UPSERT = (
    "INSERT INTO stock (item, held, note) VALUES (:item, :n, :note) "
    "ON CONFLICT (item) DO UPDATE SET held = stock.held + excluded.held"
)


def test_the_rows_a_write_touches_are_named_by_its_where_clause_or_conflict_target() -> None:
    assert row_identity(DEBIT) == ("id", "amount")
    assert row_identity(UPSERT) == ("item",)
    assert row_identity("DELETE FROM holds WHERE saga = :s AND item = :i") == ("s", "i")
    assert row_identity("INSERT INTO log (saga, what) VALUES (:s, :w)") == ("s", "w")
    assert row_identity("UPDATE t SET x = x::int + :n WHERE k = :k") == ("k",)


@pytest.mark.parametrize("sql", [DEBIT, UPSERT])
def test_two_transactions_touching_the_same_rows_order_them_alike(sql: str) -> None:
    # Whatever else the writes set (amounts, notes) and whatever order the steps ran
    # in, the rows come out in one order: the one each transaction locks them in.
    rng = random.Random(7)
    key = "id" if sql is DEBIT else "item"
    rows = ["hot", "cold", "warm", "lamp"]
    for _ in range(50):
        first = [{key: r, "amount": rng.randint(1, 99), "n": 1, "note": "a"} for r in rows]
        second = [{key: r, "amount": rng.randint(1, 99), "n": 2, "note": "b"} for r in rows]
        rng.shuffle(first)
        rng.shuffle(second)
        assert [r[key] for r in write_order(sql, first)] == [
            r[key] for r in write_order(sql, second)
        ]


def test_mixed_and_missing_values_still_sort() -> None:
    rows = [{"id": v, "amount": 1} for v in [None, 3, "a", 2.5, True, b"x", ("t",)]]
    for order in itertools.islice(itertools.permutations(rows), 20):
        assert write_order(DEBIT, list(order)) == write_order(DEBIT, rows)
