"""The shop assembled: its services, their stores, and the order saga in either flavour.

Embedded, every service keeps its own SQLite file and everything runs in one process
over the in-process transport. Distributed, every service has its own PostgreSQL
database and runs as its own process over RabbitMQ (see ``sagakit_shop.distributed``). The
pieces are the same; only the stores and the transport differ.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sagakit import Choreography, Orchestrator, SagaHandle, open_store
from sagakit.engine.orchestrator import start_message
from sagakit.engine.runtime import Consumer
from sagakit.observe import redaction, tracing
from sagakit.observe.metrics import Metrics
from sagakit.ports import UnitOfWork
from sagakit.stores.sql import SqlSagaStore
from sagakit_shop.outside import OutsideSystems
from sagakit_shop.saga import ORDER_SAGA
from sagakit_shop.services import SERVICES, OrderService, Service
from sagakit_shop.services.order import PlacedOrder
from sagakit_shop.world import World

Mode = Literal["orchestration", "choreography"]
MODES: tuple[Mode, ...] = ("orchestration", "choreography")

#: The store that keeps the saga log: the orchestrator's, or the choreography tracker's.
SAGA = "saga"
STORE_NAMES: tuple[str, ...] = (SAGA, *SERVICES)


def embedded_urls(directory: Path) -> dict[str, str]:
    """One SQLite file per service, and one for the saga log."""
    return {name: f"sqlite:///{directory / name}.db" for name in STORE_NAMES}


def embedded_files(directory: Path) -> list[Path]:
    return [
        directory / f"{name}{suffix}"
        for name in STORE_NAMES
        for suffix in (".db", ".db-wal", ".db-shm")
    ]


def open_stores(urls: Mapping[str, str]) -> dict[str, SqlSagaStore]:
    return {name: open_store(url) for name, url in urls.items()}


#: What the shop hides from logs, spans and viewers of sagas and dead letters: its
#: customers' e-mail addresses and names (``SAGAKIT_REDACT`` set otherwise wins).
REDACT = ("email", "customer")

#: The shop's own loggers (its services' ``service_log``, the supervisor's, the labs'),
#: routed with sagakit's: ``sagakit.observe.logs.configure(..., also=LOGS)``.
LOGS = ("shop",)


def hide_personal_data() -> None:
    """Set this process's redaction to the shop's, unless ``SAGAKIT_REDACT`` is set."""
    if "SAGAKIT_REDACT" not in os.environ:
        redaction.configure(REDACT)


@dataclass
class Shop:
    """The five services and the order saga, over the given stores.

    ``outside`` is how payment and shipping reach the payment gateway and the carrier;
    by default both run in this process."""

    stores: dict[str, SqlSagaStore]
    mode: Mode = "orchestration"
    fail_rate: float = 0.0
    seed: int = 0
    outside: OutsideSystems | None = None
    services: dict[str, Service] = field(init=False)
    orchestrator: Orchestrator | None = field(init=False, default=None)
    choreography: Choreography | None = field(init=False, default=None)
    metrics: Metrics = field(default_factory=Metrics)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        # A process may hold only some of the stores (a distributed service holds its own);
        # it gets the services, and the orchestrator, whose stores it has.
        if self.outside is None and {"payment", "shipping"} & set(self.stores):
            self.outside = OutsideSystems.connect(seed=self.seed)
        self.services = {
            name: cls(
                self.stores[name],
                fail_rate=self.fail_rate,
                seed=self.seed + index,
                outside=self.outside,
            )
            for index, (name, cls) in enumerate(SERVICES.items())
            if name in self.stores
        }
        if self.mode == "orchestration":
            if SAGA in self.stores:
                self.orchestrator = Orchestrator(
                    self.stores[SAGA], [ORDER_SAGA], metrics=self.metrics
                )
        else:
            self.choreography = Choreography([ORDER_SAGA])

    @property
    def orders(self) -> OrderService:
        service = self.services["order"]
        assert isinstance(service, OrderService)
        return service

    @property
    def saga_store(self) -> SqlSagaStore:
        return self.stores[SAGA]

    def saga(self, order_id: str) -> SagaHandle:
        """The saga of an order (its id is the order's): ``await shop.saga(i).outcome()``
        waits for it to end, ``sagakit.outcomes(...)`` for many."""
        return SagaHandle(order_id, self.saga_store)

    async def setup(self, world: World) -> None:
        """Migrate every store, create each service's tables, and seed the world."""
        for store in self.stores.values():
            await store.migrate()
        for service in self.services.values():
            await service.install(world)

    async def is_seeded(self) -> bool:
        """Whether every service already has its tables and its share of the world."""
        return all([await service.is_seeded() for service in self.services.values()])

    def components(self, names: Sequence[str] | None = None) -> list[Consumer]:
        """What a runtime runs for these parts of the shop (all of them by default):
        service names, and ``saga`` for the orchestrator or the tracker."""
        wanted = set(STORE_NAMES if names is None else names)
        out: list[Consumer] = []
        if SAGA in wanted and SAGA in self.stores:
            if self.orchestrator is not None:
                out.append(self.orchestrator)
            elif self.choreography is not None:
                out.append(self.choreography.tracker(self.stores[SAGA]))
        for name, service in self.services.items():
            if name not in wanted:
                continue
            if self.choreography is not None:
                out.append(self.choreography.follow(service.participant))
            else:
                out.append(service.participant)
        return out

    async def _start(self, unit: UnitOfWork, order_id: str, data: dict[str, Any]) -> None:
        if self.choreography is not None:
            await self.choreography.start_in(
                unit, ORDER_SAGA.name, data, saga_id=order_id, key=order_id
            )
        else:
            message = start_message(
                ORDER_SAGA,
                data,
                saga_id=order_id,
                key=order_id,
                traceparent=tracing.current_traceparent(),
            )
            await unit.enqueue([message])

    async def place(
        self, customer_id: str, sku: str, quantity: int, *, idempotency_key: str | None = None
    ) -> PlacedOrder:
        """Place an order: the order row and the start of its saga, in one transaction.
        The order's trace begins here."""
        attributes = {"order.customer": customer_id, "order.sku": sku}
        with tracing.span("order.place", None, attributes):
            return await self.orders.place(
                customer_id, sku, quantity, start=self._start, idempotency_key=idempotency_key
            )

    async def close(self) -> None:
        for store in self.stores.values():
            await store.close()
        if self.outside is not None:
            await self.outside.close()
