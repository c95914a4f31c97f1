"""What an orchestrator's queue carries besides replies, and the check of all of it.

A start, an operator's retry, compensate or resolve, and a person's answer to a pending
approval are each a command addressed to an orchestrator group's reply queue; any
service can build one without a running orchestrator. Whatever arrives that is not a
well-formed reply or one of these is refused as poison.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sagakit.engine.starting import StartRequest
from sagakit.errors import PoisonMessageError
from sagakit.model.contracts import check_start
from sagakit.model.definition import SagaDefinition
from sagakit.model.messages import Envelope, MessageKind, Outgoing, new_id, reply_queue
from sagakit.model.triggers import Intervene, Reply, Signal

#: The type of a message that starts a saga (see Orchestrator.start_message).
START_TYPE = "sagakit.start"
#: The type of a message carrying an operator's retry, compensate or resolve.
OPERATOR_TYPE = "sagakit.operator"
#: The type of a message carrying a person's answer to a pending approval.
SIGNAL_TYPE = "sagakit.signal"


class SignalBody(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    decision: Literal["approve", "reject"]
    who: str = Field(min_length=1, max_length=200)
    note: str = Field(default="", max_length=2000)


def signal_message(
    saga_id: str,
    decision: Literal["approve", "reject"],
    *,
    who: str,
    note: str = "",
    group: str = "orchestrator",
) -> Outgoing:
    """A person's approve or reject for a saga waiting on an approval step."""
    body = SignalBody(decision=decision, who=who, note=note)
    return _to_orchestrator(group, SIGNAL_TYPE, saga_id, body)


def trigger_of(envelope: Envelope) -> Reply | Intervene | Signal:
    """What a checked message other than a start asks the orchestrator to decide."""
    if envelope.type == OPERATOR_TYPE:
        return _intervention(envelope)
    if envelope.type == SIGNAL_TYPE:
        body = SignalBody.model_validate(envelope.payload)
        return Signal(decision=body.decision, who=body.who, note=body.note)
    return Reply.of(envelope)


class OperatorBody(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    action: Literal["retry", "compensate", "resolve"]
    who: str = Field(min_length=1, max_length=200)
    note: str = Field(default="", max_length=2000)


def operator_message(
    saga_id: str,
    action: Literal["retry", "compensate", "resolve"],
    *,
    who: str,
    note: str = "",
    group: str = "orchestrator",
) -> Outgoing:
    """A person's retry, compensate or resolve for one saga, addressed to its
    orchestrator. Enqueue it in the saga store's outbox and the relay delivers it; the
    orchestrator decides it like any other message and records who asked and why."""
    body = OperatorBody(action=action, who=who, note=note)
    return _to_orchestrator(group, OPERATOR_TYPE, saga_id, body)


def _intervention(envelope: Envelope) -> Intervene:
    body = OperatorBody.model_validate(envelope.payload)
    return Intervene(action=body.action, who=body.who, note=body.note)


class StartBody(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    definition: str
    version: int
    data: dict[str, Any]
    key: str | None = None


def start_message(
    definition: SagaDefinition,
    data: Mapping[str, Any],
    *,
    saga_id: str,
    key: str | None = None,
    group: str = "orchestrator",
    now: float | None = None,
    traceparent: str | None = None,
) -> Outgoing:
    """A message that starts a saga when orchestrator ``group`` receives it.

    Enqueue it in your own transaction (``unit.enqueue([...])``) next to the business
    write the saga is about, and the two commit together: an order row and the saga
    that processes it. Starting is idempotent on ``saga_id``. Any service can build it;
    it needs the definition, not a running orchestrator. Data that breaks a step's
    contract raises :class:`~sagakit.model.contracts.ContractError` here.
    """
    request = StartRequest(definition.name, data, saga_id=saga_id, key=key)  # refuses bad input
    check_start(definition, request.data)
    body = StartBody(
        definition=definition.name, version=definition.version, data=dict(request.data), key=key
    )
    return _to_orchestrator(group, START_TYPE, saga_id, body, now=now, traceparent=traceparent)


def _to_orchestrator(
    group: str,
    message_type: str,
    saga_id: str,
    body: BaseModel,
    *,
    now: float | None = None,
    traceparent: str | None = None,
) -> Outgoing:
    """A command for the orchestrators of ``group``, on their reply queue."""
    envelope = Envelope(
        message_id=new_id(),
        type=message_type,
        kind=MessageKind.COMMAND,
        saga_id=saga_id,
        created_at=time.time() if now is None else now,
        traceparent=traceparent,
        payload=body.model_dump(),
    )
    return Outgoing(reply_queue(group), envelope)


def check_incoming(envelope: Envelope) -> None:
    """Refuse, as poison, anything that is not a well-formed reply, start or operator
    action."""
    if envelope.kind is MessageKind.COMMAND and envelope.type in _BODIES:
        try:
            _BODIES[envelope.type].model_validate(envelope.payload)
        except ValueError as exc:
            raise PoisonMessageError("schema", f"{envelope.type} payload: {exc}") from exc
        return
    if envelope.kind is not MessageKind.REPLY or not envelope.step or not envelope.op:
        raise PoisonMessageError(
            "unknown_type", f"{envelope.kind} {envelope.type!r} is not a reply"
        )
    try:
        Reply.of(envelope)
    except ValueError as exc:
        raise PoisonMessageError("schema", f"reply payload: {exc}") from exc


_BODIES: dict[str, type[BaseModel]] = {
    START_TYPE: StartBody,
    OPERATOR_TYPE: OperatorBody,
    SIGNAL_TYPE: SignalBody,
}
