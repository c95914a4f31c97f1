"""sagakit: distributed transactions with sagas.

Define a saga, run participants that do its local transactions, and let an orchestrator
drive it to one of two ends: everything done, or everything undone.
"""

from sagakit.breakers import CircuitBreaker
from sagakit.choreography import Choreography
from sagakit.clock import FakeClock, SystemClock
from sagakit.contracts import ContractError
from sagakit.decide import Decision, decide
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
from sagakit.messages import Envelope, MessageKind, ReplyBody
from sagakit.orchestrator import Orchestrator, StartRequest
from sagakit.participant import Participant, StepContext
from sagakit.runtime import Runtime, wait_terminal
from sagakit.stores import open_store
from sagakit.transports import open_transport

__version__ = "0.1.0"

__all__ = [
    "Choreography",
    "CircuitBreaker",
    "ConcurrencyError",
    "ContractError",
    "CorruptLogError",
    "DataError",
    "Decision",
    "DefinitionError",
    "Envelope",
    "FakeClock",
    "LockPolicy",
    "MessageKind",
    "Orchestrator",
    "Parallel",
    "Participant",
    "PoisonMessageError",
    "ReplyBody",
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
    "SystemClock",
    "TransientError",
    "TransportError",
    "UnknownSagaError",
    "__version__",
    "approval",
    "decide",
    "open_store",
    "open_transport",
    "parallel",
    "wait_terminal",
]
