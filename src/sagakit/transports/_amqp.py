"""How sagakit's messages and dead letters look on AMQP, and the driver's errors as ours.

A message travels as its body, with ``message_id`` set and its envelope headers as AMQP
headers. Every ``x-`` header is the broker's or this transport's bookkeeping, so none of
them is handed to a handler as part of the message.

Several messages for the same queue (or the same event routing key) published together
may travel as one *bundle*: one AMQP message whose body holds each part's id, headers
and body. The broker, the publisher confirm and the consumer's ack then count one
message instead of many, while each part is still delivered, deduplicated, retried and
dead-lettered on its own (see :class:`~sagakit.transports.rabbitmq.RabbitTransport`).
A bundle's body is a 4-byte big-endian length, that many bytes of JSON (a list of
``[message_id, headers, body length]``), then the parts' bodies one after another.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, NoReturn

import aio_pika
import aio_pika.abc
from aiormq.exceptions import AMQPError, ChannelInvalidStateError, ChannelPreconditionFailed
from pamqp.exceptions import PAMQPException

from sagakit.errors import TransportError
from sagakit.model.messages import TransportMessage
from sagakit.ports import DeadLetter

ATTEMPT = "x-sagakit-attempt"
DESTINATION = "x-sagakit-destination"
REASON = "x-sagakit-reason"
DETAIL = "x-sagakit-detail"
ORIGINAL_QUEUE = "x-sagakit-original-queue"
ATTEMPTS = "x-sagakit-attempts"
DEAD_AT = "x-sagakit-dead-at"
DEAD_LETTER_ID = "x-sagakit-dead-letter-id"
DELIVERY_COUNT = "x-delivery-count"  # a quorum queue's count of returns of this copy
BUNDLE = "x-sagakit-bundle"  # on a bundle: how many messages it carries
BUNDLE_TYPE = "application/vnd.sagakit.bundle"

MAX_DETAIL = 4000  # what the SQL dead-letter store keeps too

#: What aio-pika and aiormq raise when the broker or the connection fails us; aio-pika
#: reports a connection that is closed or not ready as a plain RuntimeError.
DRIVER_ERRORS = (AMQPError, PAMQPException, ConnectionError, OSError, RuntimeError)


class NotStartedError(RuntimeError):
    """The transport was used before ``start()`` or after ``close()``: a bug, not a fault."""

    def __init__(self) -> None:
        super().__init__("RabbitTransport is not started: call start() first")


def raise_translated(what: str, exc: BaseException) -> NoReturn:
    """Raise ``exc`` as a :class:`TransportError` when it is the driver's."""
    if isinstance(exc, TransportError | NotStartedError):
        raise exc
    if isinstance(exc, ChannelPreconditionFailed):
        # A queue that exists with other arguments stays that way: retrying cannot help.
        error = TransportError(f"{what}: {exc} (it exists with other arguments)")
        error.retryable = False
        raise error from exc
    if isinstance(exc, DRIVER_ERRORS):
        raise TransportError(f"{what}: {type(exc).__name__}: {exc}") from exc
    raise exc


@contextlib.asynccontextmanager
async def translated(what: str) -> AsyncIterator[None]:
    try:
        yield
    except DRIVER_ERRORS as exc:
        raise_translated(what, exc)


def text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value if isinstance(value, str) else str(value)


def _int(value: object, default: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return int(text(value)) if value is not None else default
    except ValueError:
        return default


def _float(value: object) -> float:
    try:
        return float(text(value)) if value is not None else 0.0
    except ValueError:
        return 0.0


def outgoing(message: TransportMessage, extra: Mapping[str, Any] | None = None) -> aio_pika.Message:
    """The AMQP message for ``message``: persistent, JSON, its id and headers set."""
    return aio_pika.Message(
        message.body,
        message_id=message.message_id,
        headers={**message.headers, **(extra or {})},
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


def bundled(messages: Sequence[TransportMessage]) -> aio_pika.Message:
    """One persistent AMQP message carrying ``messages`` (all for the same destination)."""
    index = json.dumps(
        [[m.message_id, m.headers, len(m.body)] for m in messages], separators=(",", ":")
    ).encode()
    return aio_pika.Message(
        b"".join([len(index).to_bytes(4, "big"), index, *(m.body for m in messages)]),
        message_id=messages[0].message_id,
        headers={BUNDLE: len(messages)},
        content_type=BUNDLE_TYPE,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


def is_bundle(message: aio_pika.abc.AbstractIncomingMessage) -> bool:
    return message.content_type == BUNDLE_TYPE


def unbundled(body: bytes, destination: str) -> list[TransportMessage]:
    """The messages a bundle carries; ValueError when its body is not a bundle's."""
    size = int.from_bytes(body[:4], "big")
    try:
        index = json.loads(body[4 : 4 + size])
        parts = [(str(i), {str(k): text(v) for k, v in h.items()}, int(n)) for i, h, n in index]
    except (ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a message bundle: {exc}") from exc
    at = 4 + size
    lengths = [n for _, _, n in parts]
    if not parts or min(lengths) < 0 or at + sum(lengths) != len(body):
        raise ValueError(f"not a message bundle: {len(body)} bytes do not add up")
    messages = []
    for message_id, headers, length in parts:
        messages.append(TransportMessage(destination, message_id, body[at : at + length], headers))
        at += length
    return messages


def envelope_headers(raw: Mapping[str, Any]) -> dict[str, str]:
    return {key: text(value) for key, value in raw.items() if not key.startswith("x-")}


def attempt_of(raw: Mapping[str, Any]) -> int:
    # The attempt this copy was published for, plus each time the broker gave it back
    # because a consumer died holding it (or handed it back).
    published = max(_int(raw.get(ATTEMPT), 1), 1)
    return published + max(_int(raw.get(DELIVERY_COUNT), 0), 0)


def is_live(message: aio_pika.abc.AbstractIncomingMessage) -> bool:
    """False when the channel it came on has died: it cannot be acked, and the broker
    hands it out again anyway."""
    try:
        return not message.channel.is_closed
    except ChannelInvalidStateError:
        return False


def letter_headers(letter: DeadLetter) -> dict[str, Any]:
    return {
        REASON: letter.reason,
        DETAIL: letter.detail[:MAX_DETAIL],
        ORIGINAL_QUEUE: letter.queue,
        ATTEMPTS: letter.attempts,
        DEAD_AT: repr(letter.dead_at),  # pamqp sends a float in 32 bits: text keeps it whole
        DEAD_LETTER_ID: letter.id,
    }


def letter_of(message: aio_pika.abc.AbstractIncomingMessage) -> DeadLetter:
    """The dead letter a message in the dead-letter queue carries."""
    raw = message.headers or {}
    queue = text(raw.get(ORIGINAL_QUEUE, ""))
    original = envelope_headers(raw)
    message_id = message.message_id or original.get("message_id", "")
    return DeadLetter(
        id=text(raw.get(DEAD_LETTER_ID) or message_id),
        message=TransportMessage(queue, message_id, message.body, original),
        queue=queue,
        reason=text(raw.get(REASON, "unknown")),
        detail=text(raw.get(DETAIL, "")),
        attempts=_int(raw.get(ATTEMPTS), 1),
        dead_at=_float(raw.get(DEAD_AT)),
    )
