"""One root for every error sagakit raises, each saying whether a retry may help."""

from __future__ import annotations


class SagaError(Exception):
    """Root of sagakit's errors. ``retryable`` says whether trying again may succeed."""

    retryable: bool = False


class DefinitionError(SagaError):
    """A saga definition breaks a rule; raised when it is defined, naming the step."""


class DataError(SagaError, ValueError):
    """Saga data or a handler's reply that is not a JSON value (see :mod:`sagakit.model.data`),
    naming where the offending value is and its type. Trying again cannot help."""


class StepRejected(SagaError):
    """A participant refuses a command for a business reason (declined card, no stock).

    The participant's business writes for that command are rolled back, the refusal is
    recorded as the step's final outcome, and the saga compensates.
    """

    retryable = False

    def __init__(self, reason: str, *, data: dict[str, object] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.data = dict(data or {})


class TransientError(SagaError):
    """A failure that may pass (a dependency is down, a lock is busy); the step is retried."""

    retryable = True


class ConcurrencyError(SagaError):
    """Another writer appended to the same saga log first (expected version mismatch)."""

    retryable = True


class UnknownSagaError(SagaError, LookupError):
    """No saga with that id exists in the store."""


class CorruptLogError(SagaError):
    """A stored event cannot be read: unknown type, bad data, or no upcaster for its version."""

    def __init__(self, saga_id: str, position: int, reason: str) -> None:
        super().__init__(f"saga {saga_id}: event at position {position} is unreadable: {reason}")
        self.saga_id = saga_id
        self.position = position
        self.reason = reason


class StoreError(SagaError):
    """A database operation failed; ``retryable`` when the cause is transient."""


class TransportError(SagaError):
    """A message could not be published or consumed; always worth retrying later."""

    retryable = True


class UnroutableError(TransportError):
    """A message was published to a destination nobody declared."""


class PoisonMessageError(SagaError):
    """A delivered message can never be handled: malformed, unknown type, oversize, invalid."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
