"""The ports: what the orchestrator, participants and relay need from the outside world.

Adapters (``stores/``, ``transports/``) implement these; the core depends on nothing else.
The store's port is in :mod:`sagakit.ports.store`, its smaller tables in
:mod:`sagakit.ports.records`, the transport's in :mod:`sagakit.ports.transport`; every
name is importable from ``sagakit.ports`` itself.
"""

from sagakit.ports.records import (
    AuditRecords,
    BreakerRecords,
    HeartbeatRecords,
    LockRecords,
    Records,
    RuleRecords,
)
from sagakit.ports.store import (
    Clock,
    Loaded,
    OutboxClaim,
    OutboxRow,
    SagaRow,
    SagaSearch,
    SagaStore,
    UnitOfWork,
)
from sagakit.ports.transport import (
    DEFAULT_RETRY_TIERS,
    BatchHandler,
    DeadLetter,
    DeadLetterQueue,
    Delivery,
    PublishResult,
    Subscription,
    Transport,
)

__all__ = [
    "DEFAULT_RETRY_TIERS",
    "AuditRecords",
    "BatchHandler",
    "BreakerRecords",
    "Clock",
    "DeadLetter",
    "DeadLetterQueue",
    "Delivery",
    "HeartbeatRecords",
    "Loaded",
    "LockRecords",
    "OutboxClaim",
    "OutboxRow",
    "PublishResult",
    "Records",
    "RuleRecords",
    "SagaRow",
    "SagaSearch",
    "SagaStore",
    "Subscription",
    "Transport",
    "UnitOfWork",
]
