"""sagakit: distributed transactions with sagas.

Define a saga, run participants that do its local transactions, and let an orchestrator
drive it to one of two ends: everything done, or everything undone.
"""

from sagakit.breakers import CircuitBreaker
from sagakit.choreography import Choreography
from sagakit.contracts import ContractError
from sagakit.definition import (
    Parallel,
    RetryPolicy,
    SagaDefinition,
    Step,
    StepKind,
    approval,
    parallel,
)
from sagakit.errors import (
    ConcurrencyError,
    CorruptLogError,
    DataError,
    DefinitionError,
    PoisonMessageError,
    SagaError,
    StepRejected,
    StoreError,
    TransientError,
    TransportError,
    UnknownSagaError,
)
from sagakit.handle import SagaHandle
from sagakit.locks import LockPolicy
from sagakit.log import SagaState, SagaStatus, StepStatus
from sagakit.orchestrator import Orchestrator, StartRequest
from sagakit.participant import Participant, StepContext
from sagakit.runtime import Runtime, wait_terminal
from sagakit.stores import open_store
from sagakit.transports import open_transport

__version__ = "0.1.0"

#: Names that were exported here and now live only in their own modules: the engine's
#: internals and the test kit's clock, which most users never import. (``decide`` left
#: too: ``sagakit.decide`` is its module, where the function is.)
_MOVED = {
    "Decision": "sagakit.decide",
    "Envelope": "sagakit.messages",
    "MessageKind": "sagakit.messages",
    "ReplyBody": "sagakit.messages",
    "FakeClock": "sagakit.testing",
    "SystemClock": "sagakit.clock",
}


def __getattr__(name: str) -> object:
    if name in _MOVED:
        # An ImportError, not an AttributeError: ``from sagakit import X`` shows this
        # message instead of a bare "cannot import name".
        raise ImportError(f"sagakit.{name} has moved: use `from {_MOVED[name]} import {name}`")
    raise AttributeError(f"module 'sagakit' has no attribute {name!r}")


__all__ = [
    "Choreography",
    "CircuitBreaker",
    "ConcurrencyError",
    "ContractError",
    "CorruptLogError",
    "DataError",
    "DefinitionError",
    "LockPolicy",
    "Orchestrator",
    "Parallel",
    "Participant",
    "PoisonMessageError",
    "RetryPolicy",
    "Runtime",
    "SagaDefinition",
    "SagaError",
    "SagaHandle",
    "SagaState",
    "SagaStatus",
    "StartRequest",
    "Step",
    "StepContext",
    "StepKind",
    "StepRejected",
    "StepStatus",
    "StoreError",
    "TransientError",
    "TransportError",
    "UnknownSagaError",
    "__version__",
    "approval",
    "open_store",
    "open_transport",
    "parallel",
    "wait_terminal",
]
