"""Typed step contracts: pydantic models for what a step reads and what it adds.

A step may declare a ``command_model`` (the fields of the saga's data its command
reads) and a ``reply_model`` (what its reply adds to the data); a handler may take and
return those models::

    @inventory.command("reserve")
    async def reserve(ctx: StepContext, cmd: ReserveStock) -> StockReserved: ...

Data is checked where it crosses a boundary, and a failure names the step, the field
and the value's problem:

* at the start of a saga, the first data against every field a step needs that no
  earlier step promises to add (:func:`check_start`): the caller gets a
  :class:`ContractError` and no saga starts;
* in the participant, the command before a typed handler runs and its return value
  after (``as_handler`` in :mod:`sagakit.engine.typed_handlers`): the step is refused
  at once, its writes rolled back;
* in the orchestrator, a successful reply from the broker against the step's reply
  model (:func:`broken_reply`): the reply goes to the dead letters with the reason, and
  the step fails at once, owing its compensation (the participant says it did the work).

A step that declares a command model and no reply model adds nothing: a reply carrying
data breaks its contract. A step that declares neither is not checked, and neither is
an untyped handler: both keep working as they always have.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from sagakit.errors import StepRejected
from sagakit.model.definition import SagaDefinition, Step, StepKind

if TYPE_CHECKING:
    from sagakit.model.messages import Envelope


_SHOWN = 80  # how much of a bad value a message quotes


class ContractError(StepRejected):
    """Data that breaks a step's contract: ``step``, the ``field`` and its ``problem``.

    Raised by ``Orchestrator.start`` (no saga starts) and inside a participant (the
    step is refused, like any :class:`~sagakit.errors.StepRejected`)."""

    def __init__(self, step: str, what: str, found: list[tuple[str, str]]) -> None:
        super().__init__(describe(step, what, found))
        self.step = step
        self.field, self.problem = found[0]


def describe(step: str, what: str, found: list[tuple[str, str]]) -> str:
    """One line naming the step, then each field of its ``what`` and the field's problem."""
    return "; ".join(
        f"{step}: {what} field {field!r}: {problem}" if field else f"{step}: {what}: {problem}"
        for field, problem in found
    )


def problems(model: type[BaseModel], data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(field, problem)`` for each way ``data`` breaks ``model``; empty when it fits.

    Only the model's own fields are read: a command model describes a few fields of a
    saga's data, which always holds more (even for a model that forbids extras)."""
    try:
        model.model_validate(own_fields(model, data))
    except ValidationError as exc:
        return [_problem(error) for error in exc.errors()]
    return []


def own_fields(model: type[BaseModel], data: Mapping[str, Any]) -> dict[str, Any]:
    names = _names(model)
    return {key: value for key, value in data.items() if key in names}


@functools.cache
def _names(model: type[BaseModel]) -> frozenset[str]:
    names = set(model.model_fields)
    for name, info in model.model_fields.items():
        for alias in (info.alias, info.validation_alias):
            if isinstance(alias, str):
                names.add(alias)
        names.add(name)
    return frozenset(names)


def _problem(error: Any) -> tuple[str, str]:
    field = ".".join(str(part) for part in error["loc"])
    problem = str(error["msg"])
    if error["type"] != "missing":
        shown = repr(error["input"])
        shown = shown if len(shown) <= _SHOWN else shown[: _SHOWN - 3] + "..."
        problem += f" (got {shown})"
    return field, problem


def refuse(step: str, what: str, found: list[tuple[str, str]]) -> None:
    if found:
        raise ContractError(step, what, found)


# ---------------------------------------------------------------------- the orchestrator


def check_start(definition: SagaDefinition, data: Mapping[str, Any]) -> None:
    """Raise :class:`ContractError` when a saga's first ``data`` lacks, or holds a bad
    value for, a field a step needs that no earlier step's reply model promises.

    Steps are walked in order up to the first one without any model: what an untyped
    step adds is anybody's guess, so the steps after it are checked when they run."""
    promised: set[str] = set()
    for stage in definition.stages:
        for step in stage:
            if step.kind is StepKind.APPROVAL:
                continue
            if step.command_model is None and step.reply_model is None:
                return
            if step.command_model is not None:
                found = problems(step.command_model, data)
                refuse(step.name, "command", [p for p in found if _top(p[0]) not in promised])
        for step in stage:
            promised |= _adds(step)


def _top(field: str) -> str:
    return field.split(".", 1)[0]


def _adds(step: Step) -> set[str]:
    if step.kind is StepKind.APPROVAL:
        return {f"{step.name}_by", "approved_by"}
    return set(_names(step.reply_model)) if step.reply_model is not None else set()


def broken_reply(definition: SagaDefinition, envelope: Envelope) -> str | None:
    """Why a successful action reply breaks its step's reply model, or None when it does
    not (or the step is not typed, or the reply is a failure or a compensation's)."""
    payload = envelope.payload
    if envelope.op != "action" or payload.get("ok") is not True:
        return None
    if not envelope.step or not definition.has_step(envelope.step):
        return None
    step = definition.step(envelope.step)
    data = payload.get("data") or {}
    if step.reply_model is not None:
        found = problems(step.reply_model, data)
    elif step.command_model is not None and data:
        found = [("", f"the step adds nothing, but the reply carries {sorted(data)}")]
    else:
        return None
    return describe(step.name, "reply", found) if found else None


__all__ = [
    "ContractError",
    "broken_reply",
    "check_start",
    "describe",
    "own_fields",
    "problems",
    "refuse",
]
