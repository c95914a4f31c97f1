"""What can happen to a saga: the triggers ``decide`` takes.

A saga starts, a participant replies, time passes, an operator intervenes, or a person
answers its pending approval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sagakit.model.messages import Envelope, Op, ReplyBody


@dataclass(frozen=True, slots=True)
class Start:
    saga_id: str
    data: dict[str, Any]
    key: str | None = None
    traceparent: str | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    step: str
    op: Op
    attempt: int
    message_id: str
    body: ReplyBody
    #: Why a successful reply breaks the step's contract (see sagakit.model.contracts): the
    #: step fails at once, and is owed its compensation, since its work may be done.
    broken: str | None = None

    @classmethod
    def of(cls, envelope: Envelope) -> Reply:
        return cls(
            step=envelope.step or "",
            op=envelope.op or "action",
            attempt=envelope.attempt,
            message_id=envelope.message_id,
            body=ReplyBody.model_validate(envelope.payload),
        )


@dataclass(frozen=True, slots=True)
class Tick:
    """Time has passed: fire whatever retry or deadline is due."""


@dataclass(frozen=True, slots=True)
class Intervene:
    """A person asks the saga to ``retry`` what is stuck, to ``compensate``, or to be
    marked ``resolve``d after handling it by hand."""

    action: Literal["retry", "compensate", "resolve"]
    who: str
    note: str = ""


@dataclass(frozen=True, slots=True)
class Signal:
    """A person's answer to the saga's pending approval."""

    decision: Literal["approve", "reject"]
    who: str
    note: str = ""


Trigger = Start | Reply | Tick | Intervene | Signal
