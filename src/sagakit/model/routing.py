"""What ``decide`` asks of routing rules: whether a step runs for a saga's data.

The rule books themselves (parsed from TOML, their CEL evaluated under a time budget,
published to and read from the store) are the engine's (:mod:`sagakit.engine.rules`);
the model only asks a :class:`Routing` for a verdict, so it stays free of their I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Protocol

from sagakit.errors import SagaError
from sagakit.model.definition import Step

#: Whether a step runs for a saga's data.
Verdict = Literal["run", "skip"]


class RuleFailed(SagaError):
    """A valid rule could not be evaluated for one saga's data."""

    def __init__(self, rule: str, reason: str) -> None:
        super().__init__(f"rule {rule!r} could not be evaluated: {reason}")
        self.rule = rule
        self.reason = reason


class Routing(Protocol):
    """A saga's routing rules, as ``decide`` uses them (``RuleSet`` is one)."""

    @property
    def version(self) -> int:
        """The rules' version, recorded with the decisions they made."""
        ...

    def verdict(
        self, step: Step, data: Mapping[str, Any], saga: Mapping[str, Any] | None = None
    ) -> tuple[Verdict, str]:
        """Whether ``step`` runs for this data, and which rule (or default) said so;
        RuleFailed when a rule cannot be evaluated."""
        ...


__all__ = ["Routing", "RuleFailed", "Verdict"]
