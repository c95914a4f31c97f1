"""The rule for saga data: it is JSON, exactly.

A saga's data travels in messages and lives in its log, both JSON; a reply a handler
returns joins it. A value that JSON would change on the way (a ``Decimal`` turned into a
string, a datetime into text, a tuple or a set into a list, NaN into null, an integer key
into a string) would reach the next step as something else than what was written, so
it is refused where it enters, naming where it is and what it is:

* by ``Orchestrator.start`` (and every other way to start a saga), for the start data;
* when a handler returns, for its reply (and for the data of a ``StepRejected``): the
  attempt fails at once, not retryable, and its writes are rolled back.

JSON values are ``None``, ``bool``, ``int``, finite ``float``, ``str``, ``list`` of JSON
values and ``dict`` with ``str`` keys and JSON values. Send money as integer cents or a
string, times as ISO strings or epoch numbers, sets as sorted lists.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from sagakit.errors import DataError

#: How deep data may nest (deeper is refused rather than recursed into).
MAX_DEPTH = 64


def check_json(value: Any, where: str) -> None:
    """Raise DataError unless ``value`` is a JSON value that round-trips exactly.
    ``where`` names it in the message (``"start data"``, ``"reply of reserve"``)."""
    problem = _problem(value, "", 0)
    if problem is not None:
        place, what = problem
        at = f"{where}{place}" if place else where
        raise DataError(f"{at}: {what} is not a JSON value; {_advice(what)}")


def check_json_object(value: Any, where: str) -> dict[str, Any]:
    """Like :func:`check_json` for data that must be an object; returns it as a dict."""
    if not isinstance(value, Mapping):
        raise DataError(f"{where} must be a dict of JSON values, not {type(value).__name__}")
    check_json(value, where)
    return dict(value)


def _problem(value: Any, place: str, depth: int) -> tuple[str, str] | None:
    if value is None or isinstance(value, bool | str | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else (place, f"float {value!r}")
    if depth >= MAX_DEPTH:
        return (place, f"data nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _problem(item, f"{place}[{index}]", depth + 1)
            if found is not None:
                return found
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return (f"{place}[{key!r}]", f"a key of type {type(key).__name__}")
            found = _problem(item, f"{place}[{key!r}]", depth + 1)
            if found is not None:
                return found
        return None
    return (place, type(value).__name__)


def _advice(what: str) -> str:
    if what.startswith("float"):
        return "JSON has no NaN or infinity"
    if what.startswith("a key"):
        return "JSON object keys are strings"
    if what.startswith("data nested"):
        return "flatten it"
    hints = {
        "Decimal": "send money as integer cents or a string",
        "datetime": "send an ISO 8601 string or epoch seconds",
        "date": "send an ISO 8601 string",
        "set": "send a sorted list",
        "frozenset": "send a sorted list",
        "tuple": "send a list",
        "bytes": "send text, or base64",
    }
    return hints.get(what, "use dicts, lists, strings, numbers, booleans and None")


#: Longest saga id the stores and the envelope take.
MAX_SAGA_ID = 128


def check_saga_id(saga_id: object) -> str | None:
    """A caller's saga id as given (None: a new random one is made); DataError for one
    that would lose the idempotency it is there for (empty, blank, not a string)."""
    if saga_id is None:
        return None
    if not isinstance(saga_id, str) or not saga_id.strip() or len(saga_id) > MAX_SAGA_ID:
        raise DataError(
            f"saga_id must be a non-empty string of at most {MAX_SAGA_ID} characters, or None "
            f"for a new random id; got {saga_id!r}"
        )
    return saga_id


def check_key(key: object) -> str | None:
    """A business key as given; DataError if it is neither None nor a string."""
    if key is not None and not isinstance(key, str):
        raise DataError(f"key must be a string or None, not {type(key).__name__} {key!r}")
    return key
