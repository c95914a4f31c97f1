"""The envelope every message travels in, and the shapes of commands and replies."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sagakit.errors import PoisonMessageError

Op = Literal["action", "compensation"]

#: The envelope schema this code writes; readers accept this and every older one.
#: Version 2 added ``timeout`` (a command's handler budget).
ENVELOPE_VERSION = 2

#: Bodies larger than this are refused at the consumer and dead-lettered.
DEFAULT_MAX_BODY_BYTES = 1_048_576


class MessageKind(StrEnum):
    COMMAND = "command"
    REPLY = "reply"
    EVENT = "event"


#: Ids made from one read of the system's random source (a system call each).
_IDS_PER_READ = 256
_ready: list[str] = []


def _refill() -> None:
    raw = bytearray(os.urandom(16 * _IDS_PER_READ))
    raw[6::16] = bytes(b & 0x0F | 0x40 for b in raw[6::16])  # version 4
    raw[8::16] = bytes(b & 0x3F | 0x80 for b in raw[8::16])  # the RFC 4122 variant
    text = raw.hex()
    _ready.extend(text[i : i + 32] for i in range(0, len(text), 32))


# A forked child must not hand out ids its parent already has in hand.
os.register_at_fork(after_in_child=_ready.clear)


def new_id() -> str:
    """A fresh message or saga id: a random (version 4) UUID as 32 hex characters.

    Made in bulk from the system's random source: a saga takes a dozen ids, and one
    ``os.urandom`` call per id (as ``uuid.uuid4`` makes) was a twentieth of the fast
    path's CPU. ``list.pop`` is atomic, so threads never share an id.
    """
    try:
        return _ready.pop()
    except IndexError:
        _refill()
        return _ready.pop()


class Envelope(BaseModel):
    """Every message: identity, correlation, causation, trace context and payload."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    message_id: str = Field(min_length=1, max_length=128)
    type: str = Field(min_length=1, max_length=200)
    kind: MessageKind
    saga_id: str = Field(min_length=1, max_length=128)
    causation_id: str | None = None
    schema_version: int = ENVELOPE_VERSION
    created_at: float
    traceparent: str | None = None
    reply_to: str | None = None
    step: str | None = None
    op: Op | None = None
    attempt: int = 0
    #: For a saga command: the seconds its handler may run before it is cancelled and
    #: its transaction rolled back (the step's timeout).
    timeout: float | None = Field(default=None, gt=0)
    payload: dict[str, Any] = Field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_defaults=False).encode()

    @classmethod
    def from_bytes(cls, body: bytes, *, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> Envelope:
        """Parse a delivered body, turning every way it can be bad into a poison error."""
        if len(body) > max_bytes:
            raise PoisonMessageError("oversize", f"{len(body)} bytes exceeds the {max_bytes} cap")
        try:
            envelope = cls.model_validate_json(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            if first["type"] == "json_invalid":
                raise PoisonMessageError("malformed", "body is not valid JSON") from exc
            place = ".".join(str(p) for p in first["loc"]) or "envelope"
            raise PoisonMessageError("schema", f"{place}: {first['msg']}") from exc
        if envelope.schema_version > ENVELOPE_VERSION:
            raise PoisonMessageError(
                "schema", f"envelope version {envelope.schema_version} is newer than this reader"
            )
        return envelope


class ReplyBody(BaseModel):
    """What a participant answers: success with data, or a failure with its reason."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ok: bool
    data: dict[str, Any] = Field(default_factory=dict)
    reason: str | None = None
    retryable: bool = False
    duplicate: bool = False
    #: The participant holds (or waits for) semantic locks for this saga: release them
    #: there when the saga ends.
    locks: bool = False
    #: Not a failure of the step: a dependency is unavailable (an open circuit breaker).
    #: Retry after ``retry_after`` seconds without spending the step's retry budget.
    deferred: bool = False
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message on its way out: where it goes and the envelope it carries."""

    destination: str
    envelope: Envelope


@dataclass(frozen=True, slots=True)
class TransportMessage:
    """The bytes a transport moves, with the headers a broker can route and inspect."""

    destination: str
    message_id: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, outgoing: Outgoing) -> TransportMessage:
        env = outgoing.envelope
        headers = {"message_id": env.message_id, "type": env.type, "saga_id": env.saga_id}
        if env.traceparent:
            headers["traceparent"] = env.traceparent
        return cls(outgoing.destination, env.message_id, env.to_bytes(), headers)


#: The topic exchange events are published to; see :func:`event_destination`.
EVENTS = "sagakit.events"


def event_destination(routing_key: str) -> str:
    """Where an event goes: the events topic, under its routing key."""
    return f"{EVENTS}/{routing_key}"


def split_destination(destination: str) -> tuple[str | None, str]:
    """``(exchange, routing key)`` for an event, ``(None, queue)`` for a queue."""
    if destination.startswith(EVENTS + "/"):
        return EVENTS, destination[len(EVENTS) + 1 :]
    return None, destination


def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: ``*`` is exactly one word, ``#`` zero or more words."""
    return _match(pattern.split("."), key.split("."))


def _match(pattern: list[str], words: list[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (head in ("*", words[0])) and _match(rest, words[1:])


#: The command an orchestrator sends a participant to release a finished saga's
#: semantic locks (see sagakit.engine.locks).
RELEASE = "sagakit.release_locks"

#: The payload key a compensation command carries the saga's failure reason under.
REASON_KEY = "_reason"


def command_queue(participant: str) -> str:
    """The queue a participant consumes its commands from."""
    return f"sagakit.commands.{participant}"


def reply_queue(group: str) -> str:
    """The queue an orchestrator group consumes replies from."""
    return f"sagakit.replies.{group}"


def follower_queue(participant: str) -> str:
    """The queue a participant receives its choreography events on."""
    return f"sagakit.choreography.{participant}"


def tracker_queue(name: str = "tracker") -> str:
    """The queue a choreography's tracker (``name``) receives every saga event on."""
    return f"sagakit.{name}"


def routing_key(definition: str, step: str | None, outcome: str) -> str:
    """A choreography event's key on the events topic: ``order.started``,
    ``order.charge.succeeded``."""
    return f"{definition}.started" if step is None else f"{definition}.{step}.{outcome}"
