"""The settings of the shop-over-HTTP run (``sagakit bench --shop-http``), and the names
of the databases and broker queues each replica count's run gets."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True, kw_only=True)
class ShopHttpConfig:
    pg: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    amqp: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    generator: str = "wrk"
    connections: int = 64
    duration: float = 20.0
    replicas: Sequence[int] = (1,)
    #: The order API's port; `sagakit up` takes the four after it too.
    port: int = 18600
    #: Seconds the sagas get, after the load, to reach their end.
    settle: float = 120.0
    out: Path = Path("bench/results")
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:6])

    def stem(self, replicas: int) -> str:
        return f"benchshop_{self.run_id}_r{replicas}"

    def prefix(self, replicas: int) -> str:
        return f"benchshop-{self.run_id}-r{replicas}."
