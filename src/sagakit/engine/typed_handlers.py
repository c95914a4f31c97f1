"""Typed handlers: a participant's handler that takes its step's command model and
returns its reply model, run as a plain handler that checks both (the contracts
themselves, and the checks at a saga's start and on a reply, are the model's:
:mod:`sagakit.model.contracts`)."""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Union

from pydantic import BaseModel

from sagakit.model.contracts import ContractError, own_fields, problems, refuse

if TYPE_CHECKING:
    from sagakit.engine.participant import Handler, StepContext

#: A handler that takes its command as a model (and may return its reply as one).
TypedHandler = Callable[["StepContext", Any], Awaitable[BaseModel | None]]
#: A handler that reads ``ctx.payload`` but returns its reply as a model.
ReplyingHandler = Callable[["StepContext"], Awaitable[BaseModel | None]]
AnyHandler = Union["Handler", TypedHandler, ReplyingHandler]


def as_handler(handler: AnyHandler) -> Handler:
    """The plain handler that runs ``handler``: itself when it is untyped, otherwise a
    wrapper that validates the command into its model and its returned model on the
    way out (see the module's docstring). Called by ``Participant.on``."""
    command, reply = _models(handler)
    if command is None and reply is None:
        return typing.cast("Handler", handler)
    call = typing.cast("Callable[..., Awaitable[Any]]", handler)

    @functools.wraps(handler)
    async def typed(ctx: StepContext) -> Mapping[str, Any] | None:
        if command is None:
            result = await call(ctx)
        else:
            refuse(ctx.step, "command", problems(command, ctx.payload))
            result = await call(ctx, command.model_validate(own_fields(command, ctx.payload)))
        return None if result is None else _reply(ctx.step, reply, result)

    return typed


def _reply(step: str, model: type[BaseModel] | None, result: object) -> dict[str, Any]:
    """A typed handler's return value, checked against its reply model, as JSON data."""
    if model is None:
        raise ContractError(step, "reply", [("", "the handler declares none but returned one")])
    if not isinstance(result, model):
        raw = result.model_dump() if isinstance(result, BaseModel) else result
        if not isinstance(raw, Mapping):
            raise ContractError(step, "reply", [("", f"{type(raw).__name__} is not a model")])
        refuse(step, "reply", problems(model, raw))
        result = model.model_validate(raw)
    return result.model_dump(mode="json")


def _models(handler: AnyHandler) -> tuple[type[BaseModel] | None, type[BaseModel] | None]:
    """The command and reply models a handler's annotations name (None where none)."""
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    parameters = [
        p
        for p in inspect.signature(handler).parameters.values()
        if p.kind in positional and p.default is inspect.Parameter.empty
    ]
    if len(parameters) > 2:
        raise TypeError(
            f"handler {_name(handler)} takes {len(parameters)} arguments: a handler takes "
            "(ctx) or (ctx, command)"
        )
    try:
        hints = typing.get_type_hints(handler)
    except (NameError, TypeError) as exc:
        if len(parameters) < 2:
            return None, None  # an untyped handler may annotate with names it cannot resolve
        raise TypeError(
            f"handler {_name(handler)}: cannot read its annotations ({exc}); define its "
            "models where the handler's module can see them"
        ) from exc
    reply = _model_in(hints.get("return"))
    if len(parameters) < 2:
        return None, reply
    command = _model_in(hints.get(parameters[1].name))
    if command is None:
        raise TypeError(
            f"handler {_name(handler)}: its second argument {parameters[1].name!r} must be "
            "annotated with the step's command model (a pydantic model)"
        )
    return command, reply


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model in ``Model`` or ``Model | None``; None for anything else."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (Union, types.UnionType):
        models = [a for a in typing.get_args(annotation) if _model_in(a) is not None]
        if len(models) == 1:
            return typing.cast("type[BaseModel]", models[0])
    return None


def _name(handler: object) -> str:
    return getattr(handler, "__qualname__", repr(handler))


__all__ = ["AnyHandler", "ReplyingHandler", "TypedHandler", "as_handler"]
