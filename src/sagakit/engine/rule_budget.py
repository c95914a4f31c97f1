"""What a routing rule may cost: limits checked when it is read, and a time budget per
evaluation, spent in a worker process rather than on the deciding event loop.

When a rule is read (published, or loaded by an orchestrator) its condition must be at
most ``MAX_LENGTH`` characters, nest brackets at most ``MAX_DEPTH`` deep and
comprehensions (``all``, ``exists``, ``exists_one``, ``map``, ``filter``) at most
``MAX_COMPREHENSIONS`` deep, and its *cost bound* must be at most ``MAX_COST``: every
node of the condition counted once per iteration of the comprehensions around it, a
comprehension over a literal list iterating its length and one over the saga's data
at most ``MAX_ITEMS`` times. A rule over any limit is refused with the reason.

At run time the data must keep the bound's promise (no list longer than ``MAX_ITEMS``),
and the evaluation runs in a worker process that is stopped and replaced when it takes
longer than ``BUDGET`` seconds: a runaway evaluation costs the deciding process a
bounded wait, never its event loop's CPU. Either failure is the rule's failure: the
step then takes the rule's ``on_error`` fallback.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Mapping
from multiprocessing.connection import Connection
from typing import Any

MAX_LENGTH = 1000
MAX_DEPTH = 24
MAX_COMPREHENSIONS = 2
MAX_ITEMS = 100
MAX_COST = 10_000
#: Seconds one evaluation may take.
BUDGET = 0.25
#: Seconds the worker process may take to start (it imports the CEL interpreter).
STARTUP = 30.0

_MACROS = {"all", "exists", "exists_one", "map", "filter"}


class OverBudget(ValueError):
    """A condition, or the data it would run on, is over a limit; says which."""


def bracket_depth(text: str) -> int:
    """How deep brackets nest in ``text``, outside string literals."""
    depth = deepest = 0
    quote: str | None = None
    escaped = False
    for char in text:
        if quote is not None:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in ")]}":
            depth -= 1
    return deepest


def check_text(text: str) -> None:
    """Refuse a condition too long or too deep to parse safely."""
    if len(text) > MAX_LENGTH:
        raise OverBudget(f"the condition is {len(text)} characters long; at most {MAX_LENGTH}")
    depth = bracket_depth(text)
    if depth > MAX_DEPTH:
        raise OverBudget(f"the condition nests brackets {depth} deep; at most {MAX_DEPTH}")


def check_tree(tree: Any) -> int:
    """The cost bound of a parsed condition; OverBudget past a limit."""
    cost, nesting = _cost(tree, 1, 0)
    if nesting > MAX_COMPREHENSIONS:
        raise OverBudget(
            f"the condition nests comprehensions {nesting} deep; at most {MAX_COMPREHENSIONS}"
        )
    if cost > MAX_COST:
        raise OverBudget(
            f"the condition may cost {cost} steps per evaluation; the budget is {MAX_COST} "
            f"(a comprehension over the saga's data counts {MAX_ITEMS} items)"
        )
    return cost


def _cost(node: Any, weight: int, nesting: int) -> tuple[int, int]:
    """(cost, deepest comprehension nesting) of ``node`` iterated ``weight`` times."""
    children = getattr(node, "children", None)
    if children is None:
        return weight, nesting
    if node.data == "member_dot_arg" and len(children) == 3 and str(children[1]) in _MACROS:
        target, _name, arguments = children
        target_cost, target_nesting = _cost(target, weight, nesting)
        body_cost, body_nesting = _cost(arguments, weight * _iterations(target), nesting + 1)
        return weight + target_cost + body_cost, max(target_nesting, body_nesting)
    total, deepest = weight, nesting
    for child in children:
        cost, depth = _cost(child, weight, nesting)
        total += cost
        deepest = max(deepest, depth)
    return total, deepest


def _iterations(target: Any) -> int:
    """How often a comprehension over ``target`` may iterate: a literal list's length,
    else ``MAX_ITEMS``."""
    node = target
    while getattr(node, "data", None) in {"member", "primary"} and len(node.children) == 1:
        node = node.children[0]
    if getattr(node, "data", None) == "list_lit":
        items = node.children[0].children if node.children else []
        return max(1, len(items))
    return MAX_ITEMS


def check_data(value: Any, depth: int = 0) -> None:
    """Refuse data that would break the cost bound's promise: a list longer than
    ``MAX_ITEMS``, or nesting deeper than ``MAX_DEPTH``."""
    if depth > MAX_DEPTH:
        raise OverBudget(f"the saga's data nests more than {MAX_DEPTH} deep")
    if isinstance(value, Mapping):
        for item in value.values():
            check_data(item, depth + 1)
    elif isinstance(value, list | tuple):
        if len(value) > MAX_ITEMS:
            raise OverBudget(
                f"a list in the saga's data has {len(value)} items; at most {MAX_ITEMS}"
            )
        for item in value:
            check_data(item, depth + 1)


# ---------------------------------------------------------------------------- the worker


def _serve(conn: Connection) -> None:  # pragma: no cover - runs in the worker process
    import celpy
    from celpy.adapter import json_to_cel
    from celpy.celtypes import BoolType
    from celpy.evaluation import CELEvalError

    env = celpy.Environment()
    programs: dict[str, Any] = {}
    conn.send(("ready", None))
    while True:
        try:
            condition, data, saga = conn.recv()
        except EOFError:
            return
        try:
            program = programs.get(condition)
            if program is None:
                program = programs[condition] = env.program(env.compile(condition))
            result = program.evaluate({"data": json_to_cel(data), "saga": json_to_cel(saga)})
            if isinstance(result, CELEvalError):
                conn.send(("error", _reason(result)))
            elif isinstance(result, bool | BoolType):
                conn.send(("ok", bool(result)))
            else:
                conn.send(("error", f"the condition gave {result!r}, not true or false"))
        except Exception as exc:  # celpy raises its own errors and Python's alike
            conn.send(("error", _reason(exc)))


def _reason(exc: object) -> str:
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], str):
        return args[0]
    return str(exc) or type(exc).__name__


class RuleWorker:
    """A process that evaluates conditions, one at a time, each within ``budget``
    seconds; replaced when one runs over."""

    def __init__(self, budget: float = BUDGET) -> None:
        self.budget = budget
        self._lock = threading.Lock()
        self._process: Any = None
        self._conn: Connection | None = None

    def start(self) -> None:
        with self._lock:
            self._ensure()

    def _ensure(self) -> Connection:
        if self._conn is None or self._process is None or not self._process.is_alive():
            context = multiprocessing.get_context("spawn")
            ours, theirs = context.Pipe()
            process = context.Process(target=_serve, args=(theirs,), daemon=True)
            process.start()
            theirs.close()
            if not ours.poll(STARTUP) or ours.recv()[0] != "ready":
                process.kill()
                raise OverBudget(f"the rule worker did not start within {STARTUP}s")
            self._process, self._conn = process, ours
        return self._conn

    def evaluate(
        self, condition: str, data: Mapping[str, Any], saga: Mapping[str, Any]
    ) -> tuple[bool, str]:
        """``(True, verdict)`` or ``(False, why it failed)``."""
        with self._lock:
            conn = self._ensure()
            conn.send((condition, dict(data), dict(saga)))
            if not conn.poll(self.budget):
                self._stop()
                return False, f"the evaluation took longer than its budget of {self.budget}s"
            kind, value = conn.recv()
        if kind == "ok":
            return True, "true" if value else "false"
        return False, str(value)

    def _stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.join(5)
        if self._conn is not None:
            self._conn.close()
        self._process = self._conn = None

    def close(self) -> None:
        with self._lock:
            self._stop()


#: The process's rule worker (started on first use; one per process, like a pool).
WORKER = RuleWorker()
