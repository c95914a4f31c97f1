"""An AsyncAPI 3 document of the wire protocol, made from saga definitions.

``sagakit asyncapi --definitions sagakit_shop.saga:ORDER_SAGA`` writes it. It describes the
RabbitMQ side of docs/protocol.md as the participants see it: one command queue per
participant, the orchestrator's reply queue (where sagas are started too), the delay
tiers and the dead letters. Each step's command, compensation and replies are messages
whose ``payload`` is the envelope, and the envelope's own ``payload`` is the step's
command model (its reply's ``data`` the reply model) where the step declares one, the
saga's data as any JSON object where it does not.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from sagakit.engine.orchestrator import START_TYPE, StartBody
from sagakit.model.definition import SagaDefinition, Step, StepKind
from sagakit.model.messages import (
    ENVELOPE_VERSION,
    REASON_KEY,
    RELEASE,
    Envelope,
    ReplyBody,
    command_queue,
    reply_queue,
)
from sagakit.transports._amqp import ATTEMPT, BUNDLE, BUNDLE_TYPE, DELIVERY_COUNT, DESTINATION
from sagakit.transports._rabbit_dead_letters import DEAD_LETTER_QUEUE

#: The version of the wire protocol docs/protocol.md describes: the envelope's.
PROTOCOL_VERSION = ENVELOPE_VERSION

_REF = "#/components/schemas/{model}"
_DATA = {"type": "object", "description": "The saga's data: any JSON object."}


def document(
    definitions: Sequence[SagaDefinition],
    *,
    group: str = "orchestrator",
    host: str = "localhost:5672",
    prefix: str = "",
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document (as JSON-ready data) for ``definitions``, whose sagas
    the orchestrator ``group`` runs; queue names carry ``prefix`` as the transport's do."""
    if not definitions:
        raise ValueError("an AsyncAPI document needs at least one saga definition")
    schemas = _schemas(definitions)
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    replies = _channel(prefix + reply_queue(group), f"The replies to orchestrator {group!r}.")
    replies["messages"][START_TYPE] = _ref_message(START_TYPE)
    messages[START_TYPE] = _start_message()
    for participant, steps in _by_participant(definitions).items():
        queue = prefix + command_queue(participant)
        channel = _channel(queue, f"The commands participant {participant!r} runs.")
        received: list[str] = []
        sent: list[str] = []
        for name, message in _participant_messages(participant, steps):
            messages[name] = message
            target, listed = (replies, sent) if name.endswith(".reply") else (channel, received)
            target["messages"][name] = _ref_message(name)
            listed.append(name)
        channel["messages"]["sagakit.bundle"] = _ref_message("sagakit.bundle")
        received.append("sagakit.bundle")
        key = _key(participant)
        channels[f"commands.{key}"] = channel
        operations[f"{key}.receiveCommands"] = _operation(
            "receive", f"commands.{key}", received, f"{participant} runs its commands."
        )
        operations[f"{key}.sendReplies"] = _operation(
            "send", "replies", sent, f"{participant} answers each command."
        )
    channels["replies"] = replies
    operations["startSaga"] = _operation(
        "send", "replies", [START_TYPE], "Any service may start a saga."
    )
    channels["retryTiers"] = _retry_channel(prefix)
    channels["deadLetters"] = _dead_letter_channel(prefix + DEAD_LETTER_QUEUE)
    messages["sagakit.bundle"] = _bundle_message()
    messages["sagakit.deadLetter"] = _dead_letter_message()
    messages["sagakit.retry"] = _retry_message()
    operations["deadLetter"] = _operation(
        "send",
        "deadLetters",
        ["sagakit.deadLetter"],
        "Set aside a message that can never be handled.",
    )
    operations["retryLater"] = _operation(
        "send", "retryTiers", ["sagakit.retry"], "Bring a message back after a delay."
    )
    names = ", ".join(d.key for d in definitions)
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": f"sagakit sagas: {names}",
            "version": f"{PROTOCOL_VERSION}",
            "description": (
                f"The sagakit wire protocol, version {PROTOCOL_VERSION} (docs/protocol.md), "
                f"for the sagas {names}, as their participants see it: commands arrive on "
                "a participant's queue and each gets a reply on the queue its reply_to "
                "names."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "rabbitmq": {
                "host": host,
                "protocol": "amqp",
                "protocolVersion": "0-9-1",
                "description": "RabbitMQ: durable quorum queues, publisher confirms.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def _by_participant(definitions: Iterable[SagaDefinition]) -> dict[str, list[Step]]:
    found: dict[str, list[Step]] = {}
    for definition in definitions:
        for step in definition.steps:
            if step.kind is not StepKind.APPROVAL:
                found.setdefault(step.participant, []).append(step)
    return found


def _key(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def _schemas(definitions: Sequence[SagaDefinition]) -> dict[str, Any]:
    models: list[type[BaseModel]] = [Envelope, ReplyBody, StartBody]
    for definition in definitions:
        for step in definition.steps:
            for model in (step.command_model, step.reply_model):
                if model is not None and model not in models:
                    models.append(model)
    _, found = models_json_schema([(m, "validation") for m in models], ref_template=_REF)
    schemas: dict[str, Any] = found.get("$defs", {})
    schemas["Headers"] = _headers()
    return schemas


def _schema_ref(model: type[BaseModel] | None) -> dict[str, Any]:
    return {"$ref": _REF.format(model=model.__name__)} if model is not None else dict(_DATA)


def _participant_messages(
    participant: str, steps: Sequence[Step]
) -> list[tuple[str, dict[str, Any]]]:
    """Every message a participant's steps make: command and reply for each action and
    compensation, and the release of a finished saga's locks."""
    out: dict[str, dict[str, Any]] = {}
    for step in steps:
        sends = [("action", step.command)]
        if step.compensation:
            sends.append(("compensation", step.compensation))
        for op, command in sends:
            name = f"{participant}.{command}"
            if name in out:
                _also(out[name], step.name)
                _also(out[f"{name}.reply"], step.name)
                continue
            out[name] = _command_message(name, step, op)
            reply = step.reply_model if op == "action" else None
            out[f"{name}.reply"] = _reply_message(name, step, op, reply)
    release = f"{participant}.{RELEASE}"
    out[release] = _release_message(release)
    return list(out.items())


def _also(message: dict[str, Any], step: str) -> None:
    steps = message["payload"]["allOf"][1]["properties"]["step"]["enum"]
    if step not in steps:
        steps.append(step)


def _envelope(kind: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "allOf": [
            {"$ref": _REF.format(model="Envelope")},
            {
                "type": "object",
                "required": required,
                "properties": {"kind": {"const": kind}, **properties},
            },
        ]
    }


def _command_message(name: str, step: Step, op: str) -> dict[str, Any]:
    payload = _schema_ref(step.command_model)
    what = "undoes" if op == "compensation" else "runs"
    summary = f"The orchestrator asks {step.participant} to {what} step {step.name}."
    if op == "compensation":
        payload = {
            "allOf": [
                payload,
                {
                    "type": "object",
                    "properties": {
                        REASON_KEY: {"type": "string", "description": "Why the saga is undone."}
                    },
                },
            ]
        }
    return _message(
        name,
        summary,
        _envelope(
            "command",
            {
                "type": {"const": name},
                "op": {"const": op},
                "step": {"enum": [step.name]},
                "reply_to": {"type": "string", "minLength": 1},
                "attempt": {"type": "integer", "minimum": 1},
                "payload": payload,
            },
            ["step", "op", "reply_to", "attempt"],
        ),
    )


def _reply_message(name: str, step: Step, op: str, model: type[BaseModel] | None) -> dict[str, Any]:
    body: dict[str, Any] = {"$ref": _REF.format(model="ReplyBody")}
    if model is not None:
        body = {
            "allOf": [
                body,
                {
                    "if": {"properties": {"ok": {"const": True}}},
                    "then": {"properties": {"data": _schema_ref(model)}},
                },
            ]
        }
    return _message(
        f"{name}.reply",
        f"{step.participant} answers {name} ({op} of step {step.name}).",
        _envelope(
            "reply",
            {
                "type": {"const": f"{name}.reply"},
                "op": {"const": op},
                "step": {"enum": [step.name]},
                "causation_id": {"type": "string", "minLength": 1},
                "payload": body,
            },
            ["step", "op", "causation_id", "attempt"],
        ),
    )


def _release_message(name: str) -> dict[str, Any]:
    return _message(
        name,
        "A finished saga's semantic locks at this participant may be released.",
        _envelope("command", {"type": {"const": name}}, []),
    )


def _start_message() -> dict[str, Any]:
    return _message(
        START_TYPE,
        "Start a saga (idempotent on saga_id).",
        _envelope(
            "command",
            {"type": {"const": START_TYPE}, "payload": {"$ref": _REF.format(model="StartBody")}},
            ["payload"],
        ),
    )


def _message(name: str, summary: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "title": name,
        "summary": summary,
        "contentType": "application/json",
        "headers": {"$ref": _REF.format(model="Headers")},
        "correlationId": {"location": "$message.payload#/saga_id"},
        "payload": payload,
    }


def _headers() -> dict[str, Any]:
    text = {"type": "string"}
    return {
        "type": "object",
        "description": "AMQP headers: the envelope's identity, and the transport's x- ones.",
        "required": ["message_id", "type", "saga_id"],
        "properties": {
            "message_id": text,
            "type": text,
            "saga_id": text,
            "traceparent": {
                "type": "string",
                "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
            },
            ATTEMPT: {"type": "integer", "minimum": 1, "description": "On a retry copy."},
            DESTINATION: {"type": "string", "description": "On a retry copy: its queue."},
            DELIVERY_COUNT: {"type": "integer", "description": "Set by a quorum queue."},
        },
    }


def _bundle_message() -> dict[str, Any]:
    return {
        "name": "sagakit.bundle",
        "title": "bundle",
        "summary": "Several messages for one queue as one AMQP message (docs/protocol.md).",
        "contentType": BUNDLE_TYPE,
        "headers": {
            "type": "object",
            "required": [BUNDLE],
            "properties": {BUNDLE: {"type": "integer", "minimum": 1}},
        },
        "payload": {
            "type": "string",
            "format": "binary",
            "description": "A 4-byte big-endian length n, n bytes of JSON "
            "[[message_id, headers, length], ...], then each message's body in order.",
        },
    }


def _dead_letter_message() -> dict[str, Any]:
    text = {"type": "string"}
    return {
        "name": "sagakit.deadLetter",
        "title": "dead letter",
        "summary": "A message set aside with its reason; its body is the original's.",
        "headers": {
            "type": "object",
            "required": ["x-sagakit-reason", "x-sagakit-original-queue"],
            "properties": {
                "x-sagakit-reason": text,
                "x-sagakit-detail": text,
                "x-sagakit-original-queue": text,
                "x-sagakit-attempts": {"type": "integer"},
                "x-sagakit-dead-at": text,
                "x-sagakit-dead-letter-id": text,
            },
        },
        "payload": {"description": "The original message's body, unchanged."},
    }


def _retry_message() -> dict[str, Any]:
    return {
        "name": "sagakit.retry",
        "title": "retry copy",
        "summary": "A message published again to a delay tier; it returns to its queue.",
        "headers": {"$ref": _REF.format(model="Headers")},
        "payload": {"description": "The original message's body, unchanged."},
    }


def _channel(address: str, description: str) -> dict[str, Any]:
    return {
        "address": address,
        "description": description,
        "messages": {},
        "bindings": {"amqp": _queue_binding(address)},
    }


def _queue_binding(name: str) -> dict[str, Any]:
    return {
        "is": "queue",
        "queue": {"name": name, "durable": True, "exclusive": False, "autoDelete": False},
        "bindingVersion": "0.3.0",
    }


def _retry_channel(prefix: str) -> dict[str, Any]:
    return {
        "address": prefix + "{queue}.retry.{tier}",
        "description": "A work queue's delay tiers: a message waits there for the tier's "
        "delay (its x-message-ttl), then the broker dead-letters it back to the queue.",
        "parameters": {
            "queue": {"description": "The work queue, e.g. sagakit.commands.inventory."},
            "tier": {"description": "1, 2, 3...: the delay grows with the tier."},
        },
        "messages": {"sagakit.retry": _ref_message("sagakit.retry")},
    }


def _dead_letter_channel(address: str) -> dict[str, Any]:
    channel = _channel(address, "Messages that can never be handled, each with its reason.")
    channel["messages"]["sagakit.deadLetter"] = _ref_message("sagakit.deadLetter")
    return channel


def _ref_message(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/messages/{name}"}


def _operation(action: str, channel: str, messages: Sequence[str], summary: str) -> dict[str, Any]:
    return {
        "action": action,
        "channel": {"$ref": f"#/channels/{channel}"},
        "summary": summary,
        "messages": [{"$ref": f"#/channels/{channel}/messages/{name}"} for name in messages],
    }


__all__ = ["PROTOCOL_VERSION", "document"]
