"""The rule for saga data: JSON values, exactly, refused where they enter with where
and what."""

from __future__ import annotations

import datetime
import json
from decimal import Decimal
from typing import Any

import pytest

from sagakit.errors import DataError
from sagakit.model.data import check_json, check_json_object, check_saga_id


@pytest.mark.parametrize(
    "value",
    [
        None,
        {"a": 1, "b": [1, 2.5, "x", None, True], "c": {"d": {"e": []}}},
        {"big": 10**30, "neg": -0.0, "text": "naïve ☕"},
    ],
)
def test_json_values_pass_and_round_trip(value: Any) -> None:
    check_json(value, "data")
    assert json.loads(json.dumps(value)) == value


@pytest.mark.parametrize(
    ("value", "place", "what"),
    [
        ({"price": Decimal("9.99")}, "data['price']", "Decimal"),
        ({"at": datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)}, "data['at']", "datetime"),
        ({"tags": {"a"}}, "data['tags']", "set"),
        ({"pair": (1, 2)}, "data['pair']", "tuple"),
        ({"raw": b"x"}, "data['raw']", "bytes"),
        ({"x": object()}, "data['x']", "object"),
        ({"items": [1, {"n": float("inf")}]}, "data['items'][1]['n']", "float inf"),
        ({"n": float("nan")}, "data['n']", "float nan"),
        ({1: "one"}, "data[1]", "a key of type int"),
    ],
)
def test_anything_json_would_change_is_refused_naming_where_and_what(
    value: Any, place: str, what: str
) -> None:
    with pytest.raises(DataError) as refused:
        check_json(value, "data")
    assert str(refused.value).startswith(f"{place}: {what} is not a JSON value; ")


def test_data_nested_without_end_is_refused_not_recursed_into() -> None:
    deep: dict[str, Any] = {}
    inner = deep
    for _ in range(1000):
        inner["x"] = {}
        inner = inner["x"]
    with pytest.raises(DataError, match="nested deeper than 64 levels"):
        check_json(deep, "data")


def test_an_object_is_needed_where_the_saga_s_data_goes() -> None:
    assert check_json_object({"a": 1}, "data") == {"a": 1}
    with pytest.raises(DataError, match="data must be a dict of JSON values, not list"):
        check_json_object([1], "data")


@pytest.mark.parametrize("saga_id", ["", "   ", 7, "x" * 129])
def test_a_saga_id_that_would_lose_idempotency_is_refused(saga_id: object) -> None:
    with pytest.raises(DataError, match="saga_id must be a non-empty string"):
        check_saga_id(saga_id)
    assert check_saga_id(None) is None
    assert check_saga_id("order-1") == "order-1"
