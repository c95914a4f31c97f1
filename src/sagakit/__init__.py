"""sagakit: distributed transactions with sagas.

Define a saga, run participants that do its local transactions, and let an orchestrator
drive it to one of two ends: everything done, or everything undone.
"""

import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Sequence

from sagakit.engine.breakers import CircuitBreaker
from sagakit.engine.choreography import Choreography
from sagakit.engine.handle import SagaHandle, outcomes
from sagakit.engine.locks import LockPolicy
from sagakit.engine.orchestrator import Orchestrator, StartRequest
from sagakit.engine.participant import Participant, StepContext
from sagakit.engine.runtime import Runtime, wait_terminal
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
from sagakit.model.contracts import ContractError
from sagakit.model.definition import (
    Parallel,
    RetryPolicy,
    SagaDefinition,
    Step,
    StepKind,
    approval,
    parallel,
)
from sagakit.model.state import SagaState
from sagakit.model.status import SagaStatus, StepStatus
from sagakit.stores import open_store
from sagakit.transports import open_transport

__version__ = "0.1.0"

#: Names that were exported here and now live only in their own modules: the engine's
#: internals and the test kit's clock, which most users never import.
_MOVED = {
    "Decision": "sagakit.model.decision",
    "Envelope": "sagakit.model.messages",
    "MessageKind": "sagakit.model.messages",
    "ReplyBody": "sagakit.model.messages",
    "FakeClock": "sagakit.testing",
    "SystemClock": "sagakit.clock",
}

#: Modules that moved into a layer's folder: importing one by its old name raises an
#: ImportError that says where it went, instead of a bare "No module named". A module
#: that was split names each of its parts.
_MOVED_MODULES: dict[str, tuple[str, ...]] = {
    "sagakit.contracts": ("sagakit.model.contracts",),
    "sagakit.data": ("sagakit.model.data",),
    "sagakit.decide": (
        "sagakit.model.decide",
        "sagakit.model.decision",
        "sagakit.model.triggers",
    ),
    "sagakit.definition": ("sagakit.model.definition",),
    "sagakit.log": (
        "sagakit.model.events",
        "sagakit.model.status",
        "sagakit.model.state",
        "sagakit.model.transitions",
        "sagakit.model.describe",
    ),
    "sagakit.messages": ("sagakit.model.messages",),
    "sagakit.batching": ("sagakit.engine.batching",),
    "sagakit.breakers": ("sagakit.engine.breakers",),
    "sagakit.choreography": ("sagakit.engine.choreography",),
    "sagakit.collector": ("sagakit.engine.gc_tuning",),
    "sagakit.fused": ("sagakit.engine.fused",),
    "sagakit.groupcommit": ("sagakit.engine.groupcommit",),
    "sagakit.handle": ("sagakit.engine.handle",),
    "sagakit.liveness": ("sagakit.engine.liveness",),
    "sagakit.locks": ("sagakit.engine.locks",),
    "sagakit.logs": ("sagakit.observe.logs",),
    "sagakit.metrics": ("sagakit.observe.metrics",),
    "sagakit.orchestrator": ("sagakit.engine.orchestrator",),
    "sagakit.participant": ("sagakit.engine.participant",),
    "sagakit.publisher": ("sagakit.engine.publisher",),
    "sagakit.redaction": ("sagakit.observe.redaction",),
    "sagakit.relay": ("sagakit.engine.relay",),
    "sagakit.rule_budget": ("sagakit.engine.rule_budget",),
    "sagakit.rules": ("sagakit.engine.rules",),
    "sagakit.runtime": ("sagakit.engine.runtime",),
    "sagakit.startup": ("sagakit.engine.startup",),
    "sagakit.tracing": ("sagakit.observe.tracing",),
}


def __getattr__(name: str) -> object:
    if name in _MOVED:
        # An ImportError, not an AttributeError: ``from sagakit import X`` shows this
        # message instead of a bare "cannot import name".
        raise ImportError(f"sagakit.{name} has moved: use `from {_MOVED[name]} import {name}`")
    if f"sagakit.{name}" in _MOVED_MODULES:
        raise _moved_module(f"sagakit.{name}")
    raise AttributeError(f"module 'sagakit' has no attribute {name!r}")


def _moved_module(old: str) -> ModuleNotFoundError:
    return ModuleNotFoundError(f"{old} has moved: use {' or '.join(_MOVED_MODULES[old])}", name=old)


class _MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Asked last, after every real finder missed: answers only for a moved module."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname in _MOVED_MODULES:
            raise _moved_module(fullname)
        return None


if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())


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
    "outcomes",
    "parallel",
    "wait_terminal",
]
