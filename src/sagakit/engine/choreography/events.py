"""A choreography's events: the saga's data as it now stands, published under the
routing key of what happened and read back, or refused, by whoever follows it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sagakit.engine.choreography.topology import routing_key
from sagakit.errors import PoisonMessageError
from sagakit.model.definition import SagaDefinition
from sagakit.model.messages import (
    Envelope,
    MessageKind,
    Op,
    Outgoing,
    event_destination,
    new_id,
)
from sagakit.ports import Delivery


class SagaEventBody(BaseModel):
    """The payload of a choreography event: the saga's data as it now stands."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data: dict[str, Any] = Field(default_factory=dict)
    reason: str | None = None
    key: str | None = None
    version: int = 1
    null_compensation: bool = False


def saga_event(
    definition: SagaDefinition,
    saga_id: str,
    step: str | None,
    outcome: str,
    body: SagaEventBody,
    *,
    now: float,
    causation_id: str | None = None,
    traceparent: str | None = None,
    op: Op | None = None,
) -> Outgoing:
    key = routing_key(definition.name, step, outcome)
    envelope = Envelope(
        message_id=new_id(),
        type=key,
        kind=MessageKind.EVENT,
        saga_id=saga_id,
        causation_id=causation_id,
        created_at=now,
        traceparent=traceparent,
        step=step,
        op=op,
        attempt=1,
        payload=body.model_dump(),
    )
    return Outgoing(event_destination(key), envelope)


def parse_event(delivery: Delivery) -> tuple[Envelope, SagaEventBody]:
    """The event a delivery carries; a :class:`PoisonMessageError` if it is none."""
    event = Envelope.from_bytes(delivery.message.body)
    if event.kind is not MessageKind.EVENT:
        raise PoisonMessageError("unknown_type", f"{event.kind} {event.type!r} is not an event")
    try:
        body = SagaEventBody.model_validate(event.payload)
    except ValueError as exc:
        raise PoisonMessageError("schema", f"saga event payload: {exc}") from exc
    return event, body
