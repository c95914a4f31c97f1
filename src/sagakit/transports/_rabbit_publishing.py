"""Publishing on RabbitMQ: mandatory publishes that count once the broker confirmed them,
and the messages published together cut into bundles.

Messages published together for the same queue (or event routing key) travel as one
bundle (``_amqp.bundled``), up to ``bundle_max`` messages and ``bundle_bytes`` bytes:
one broker message, one confirm, one ack for many saga messages, which is most of what
a message costs the relay, the broker and each consumer. A queue named in ``unbundled``
(one served by a consumer that reads only plain messages, see docs/protocol.md) gets
every message on its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence

import aio_pika
import aio_pika.abc
from aiormq.exceptions import DeliveryError, PublishError
from pamqp.commands import Basic

from sagakit.model.messages import TransportMessage
from sagakit.ports import PublishResult
from sagakit.transports._amqp import bundled, outgoing, raise_translated


async def send_confirmed(
    exchange: aio_pika.abc.AbstractExchange,
    key: str,
    message: aio_pika.Message,
    *,
    timeout: float,
) -> str | None:
    """Publish ``message`` under ``key`` as mandatory on a confirming channel; return why
    the broker refused it, or None once it confirmed. Driver errors pass."""
    try:
        # The timeout also covers waiting for a lost connection to come back.
        async with asyncio.timeout(timeout):
            await exchange.publish(message, key, mandatory=True)
    except PublishError as exc:
        frame = exc.frame
        why = frame.reply_text if isinstance(frame, Basic.Return) else "returned"
        return f"unroutable: {why}: nothing bound to {key!r}"
    except DeliveryError as exc:
        return f"refused by the broker: {exc}"
    return None


def bundles_of(
    messages: Sequence[TransportMessage], *, most: int, size: int, alone: Collection[str]
) -> list[list[TransportMessage]]:
    """``messages`` by destination, each destination's in order, cut into bundles of at
    most ``most`` messages and about ``size`` bytes; those for a destination in ``alone``
    one to a bundle."""
    routes: dict[str, list[TransportMessage]] = {}
    for message in messages:
        routes.setdefault(message.destination, []).append(message)
    return [b for group in routes.values() for b in _cut(group, most, size, alone)]


def _cut(
    group: list[TransportMessage], most: int, size: int, alone: Collection[str]
) -> list[list[TransportMessage]]:
    """``group`` (one destination, in order) cut into bundles within the limits."""
    if group[0].destination in alone:
        return [[message] for message in group]
    bundles: list[list[TransportMessage]] = []
    carried = 0
    for message in group:
        if not bundles or len(bundles[-1]) >= most or carried + len(message.body) > size:
            bundles.append([])
            carried = 0
        bundles[-1].append(message)
        carried += len(message.body)
    return bundles


def carrier(bundle: Sequence[TransportMessage]) -> aio_pika.Message:
    """The AMQP message a bundle travels as: a message alone travels as itself."""
    return outgoing(bundle[0]) if len(bundle) == 1 else bundled(bundle)


def confirmations(
    bundles: Sequence[Sequence[TransportMessage]],
    outcomes: Sequence[str | BaseException | None],
    what: str,
) -> PublishResult:
    """What the broker said of each message, from each bundle's outcome: confirmed
    (None), or why it was refused. A driver error raises as a TransportError."""
    result = PublishResult(confirmed=set())
    for bundle, outcome in zip(bundles, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            # Confirms for the rest are lost with the connection; the caller retries.
            raise_translated(what, outcome)
        for message in bundle:
            if outcome is None:
                result.confirmed.add(message.message_id)
            else:
                result.failed[message.message_id] = outcome
    return result
