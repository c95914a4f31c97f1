"""The transport port: queues that deliver batches of messages, confirm what they
publish, and set aside what can never be handled. ``transports/`` implements it."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from sagakit.model.messages import new_id

if TYPE_CHECKING:
    from sagakit.model.messages import TransportMessage


@dataclass(frozen=True, slots=True)
class PublishResult:
    """Which messages a broker confirmed, and why the others were refused."""

    confirmed: set[str]
    failed: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Delivery:
    """A message handed to a consumer; ``attempt`` counts deliveries of this message.

    A handler that finds a message it can never handle calls :meth:`reject`; the
    transport then dead-letters that one message with the reason and acks the rest. A
    handler that cannot handle a message *yet* calls :meth:`retry`; the transport brings
    that one message back after its retry tier's delay, as if the handler had raised.
    A handler whose dependency is down (an open circuit breaker) calls :meth:`defer`:
    the message comes back after about the given wait, and the try does not count
    toward the transport's delivery limit. A handler whose work for a delivery has
    committed while the rest of its batch goes on may call :meth:`done`, so the
    transport can acknowledge it now rather than with the batch.
    """

    message: TransportMessage
    attempt: int = 1
    rejection: tuple[str, str] | None = None
    retry_reason: str | None = None
    #: Set by a transport that can acknowledge one delivery before its batch returns.
    on_done: Callable[[], None] | None = field(default=None, repr=False, compare=False)
    #: Set by :meth:`defer`: come back after about this many seconds, uncounted.
    deferred_for: float | None = None

    def reject(self, reason: str, detail: str) -> None:
        self.rejection = (reason, detail)

    def retry(self, reason: str) -> None:
        self.retry_reason = reason
        self.deferred_for = None

    def defer(self, reason: str, after: float) -> None:
        """Bring this message back after about ``after`` seconds (the transport's nearest
        delay at or above it, or its longest) with its attempt unchanged: a dependency
        being down is not the message's fault, so however long the outage lasts, it
        never reaches the delivery limit and the dead letters on that account."""
        self.retry_reason = reason
        self.deferred_for = max(after, 0.0)

    def reset(self) -> None:
        """Forget a verdict (the handler is deciding the batch again)."""
        self.rejection = self.retry_reason = self.deferred_for = None

    def done(self) -> None:
        """This delivery's work has committed: it needs no verdict and may be
        acknowledged before the rest of its batch is."""
        if self.on_done is not None and self.rejection is None and self.retry_reason is None:
            self.on_done()


BatchHandler = Callable[[Sequence[Delivery]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message set aside because it can never be handled, with why and from where.

    ``reason`` is one of: ``malformed`` (not JSON), ``schema`` (fails its schema),
    ``unknown_type``, ``oversize``, ``non_retryable`` (the handler said so),
    ``delivery_limit`` (retried too often), or another word an application chose.
    """

    id: str
    message: TransportMessage
    queue: str
    reason: str
    detail: str
    attempts: int
    dead_at: float

    @classmethod
    def now(
        cls, message: TransportMessage, queue: str, reason: str, detail: str, attempts: int
    ) -> DeadLetter:
        """A letter set aside at this moment, under a fresh id."""
        return cls(new_id(), message, queue, reason, detail, attempts, time.time())


class DeadLetterQueue(Protocol):
    """Where dead letters wait for a person: list, look, replay, or throw away."""

    async def add(self, letter: DeadLetter) -> None:
        """Set a message aside (the transport calls this when it dead-letters)."""
        ...

    async def list(self, *, limit: int = 100) -> list[DeadLetter]: ...

    async def get(self, dead_letter_id: str) -> DeadLetter:
        """One dead letter; raises LookupError for an unknown id."""
        ...

    async def replay(self, ids: Sequence[str] | None = None) -> int:
        """Send dead letters back to their original queues (all when ``ids`` is None),
        as fresh deliveries; return how many went back."""
        ...

    async def purge(self) -> int: ...

    async def depth(self) -> int: ...


#: The delays (seconds) before each redelivery of a message whose handler failed.
DEFAULT_RETRY_TIERS: tuple[float, ...] = (1.0, 5.0, 30.0, 120.0)


class Subscription(Protocol):
    async def stop(self, *, grace: float = 0.0) -> None:
        """Take no more messages; let the batch being handled finish within ``grace``
        seconds, then cancel it (its transaction rolls back and its messages go back to
        the queue for another consumer). Returns within about ``grace`` seconds."""
        ...


class Transport(Protocol):
    """Moves bytes between queues. ``publish`` returns only what the broker confirmed.

    A destination is a queue name, or ``sagakit.events/<routing key>`` for an event,
    which reaches every queue bound to a matching pattern (``*`` one word, ``#`` any).
    """

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def declare(self, queue: str) -> None:
        """Create a durable work queue (and its retry tiers), if it does not exist."""
        ...

    async def bind(self, queue: str, pattern: str) -> None:
        """Deliver events whose routing key matches ``pattern`` to ``queue`` too."""
        ...

    async def publish(self, messages: Sequence[TransportMessage]) -> PublishResult: ...

    async def consume(
        self, queue: str, handler: BatchHandler, *, prefetch: int = 64, concurrency: int = 1
    ) -> Subscription:
        """Deliver batches to ``handler``, up to ``concurrency`` of them at once (each
        its own call, so a slow one holds only its own messages). A batch is
        acknowledged when it returns, each rejected delivery is dead-lettered, and when
        the handler raises every message of the batch comes back after its retry tier's
        delay (attempt + 1), until the delivery limit dead-letters it."""
        ...

    @property
    def dead_letters(self) -> DeadLetterQueue: ...
