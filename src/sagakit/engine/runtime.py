"""The runtime: owns everything that runs in a process, and stops it cleanly.

Give it a transport, orchestrators and participants; it declares their queues, starts
their consumers, a publisher for each of their stores (what a transaction commits to
the outbox is published straight after the commit), one outbox relay per store (for
what a publisher did not get confirmed) and one timer loop per orchestrator, and
restarts any loop that fails (a database restart, a dropped connection).

Its parts, each a module beside this one: the consumers and their queues
(:mod:`~sagakit.engine.consumers`), the outboxes' publishers, relays and pruning
(:mod:`~sagakit.engine.outboxes`), the orchestrators' timers (:mod:`~sagakit.engine.timers`)
and the supervision of its loops (:mod:`~sagakit.engine.supervision`).
"""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import Iterable
from types import TracebackType

from sagakit.engine import gc_tuning
from sagakit.engine.consumers import Consumer, declare_queues, subscribe
from sagakit.engine.fused.engine import FusedEngine
from sagakit.engine.orchestrator import Orchestrator
from sagakit.engine.outboxes import attach_publisher, prune_loop
from sagakit.engine.participant import Participant
from sagakit.engine.publisher import OutboxPublisher
from sagakit.engine.relay import OutboxRelay
from sagakit.engine.startup import check_stores, warn_unserved
from sagakit.engine.supervision import CLOSE_WAIT, Supervisor
from sagakit.engine.timers import timer_loop
from sagakit.observe.logs import get_logger
from sagakit.ports import SagaStore, Subscription, Transport
from sagakit.transports.memory import MemoryTransport

__all__ = ["Consumer", "Runtime", "wait_terminal"]

log = get_logger("sagakit.runtime")


class Runtime:
    """Runs orchestrators, participants and relays over one transport until stopped.

    Components added with :meth:`add` each consume their queue on the transport (the
    in-process one when none is given). An orchestrator added with :meth:`fuse` runs its
    participants inside its own transactions instead (see :mod:`sagakit.engine.fused`).

    On start it sets the garbage collector for a runtime's allocations once per process
    (:mod:`sagakit.engine.gc_tuning`) unless ``tune_collector`` is False. With ``timers`` False
    the orchestrators' timers are left to whoever owns time (a test's fake clock).

    Before anything runs, every store must be at sagakit's current migration: one that is
    not stops the start with the command that fixes it, unless ``migrate`` is True, which
    migrates them. A participant that a definition names and nobody serves (in this
    process, or on the broker) is named in a warning."""

    def __init__(
        self,
        transport: Transport | None = None,
        *,
        prefetch: int = 64,
        timer_interval: float = 0.1,
        relay_poll: float = 0.5,
        relay_batch: int = 256,
        relay_grace: float = 1.0,
        publish_on_commit: bool = True,
        restart_delay: float = 0.5,
        outbox_retention: float = 3600.0,
        prune_interval: float = 300.0,
        relays: bool = True,
        timers: bool = True,
        tune_collector: bool = True,
        migrate: bool = False,
    ) -> None:
        self.migrate = migrate
        self.run_relays = relays
        self.run_timers = timers
        self.tune_collector = tune_collector
        self.outbox_retention = outbox_retention
        self.prune_interval = prune_interval
        self.transport: Transport = transport or MemoryTransport()
        self.prefetch = prefetch
        self.timer_interval = timer_interval
        self.relay_poll = relay_poll
        self.relay_batch = relay_batch
        self.relay_grace = relay_grace
        self.publish_on_commit = publish_on_commit
        self.restart_delay = restart_delay
        self.orchestrators: list[Orchestrator] = []
        self.consumers: list[Consumer] = []
        self.relays: dict[int, OutboxRelay] = {}
        #: The publishers of the added components' stores, by store (publish on commit).
        self.publishers: dict[int, OutboxPublisher] = {}
        self._committing: set[int] = set()
        #: The fused engines, by their orchestrator's group (see :meth:`fuse`).
        self.fused: dict[str, FusedEngine] = {}
        self._stores: dict[int, SagaStore] = {}
        self._subscriptions: list[Subscription] = []
        self._loops = Supervisor(restart_delay=restart_delay)
        self._running = False

    def add(self, *components: Consumer) -> Runtime:
        """Run these consumers (an orchestrator's timer loop comes with it)."""
        if self._running:
            raise RuntimeError("add components before the runtime starts")
        for component in components:
            if isinstance(component, Orchestrator):
                self.orchestrators.append(component)
            self.consumers.append(component)
            self._stores.setdefault(id(component.store), component.store)
            self._committing.add(id(component.store))
        return self

    def fuse(
        self,
        orchestrator: Orchestrator,
        *participants: Participant,
        batch: int = 128,
        workers: int = 2,
        turn_wait: float = 5.0,
    ) -> Runtime:
        """Run ``orchestrator`` with ``participants`` inside its own transactions: every
        participant of its definitions, all on its store. Each step is one transaction
        holding the participant's inbox row and writes, the decision on its outcome and
        the next command; ``orchestrator.start()`` runs a saga's first step in the
        start's own transaction. ``batch`` bounds the steps one transaction carries,
        ``workers`` transactions run at once, and ``turn_wait`` bounds a transaction's
        wait for the turn on rows other sagas share (see :mod:`sagakit.engine.fused`)."""
        if self._running:
            raise RuntimeError("fuse orchestrators before the runtime starts")
        self.fused[orchestrator.group] = FusedEngine(
            orchestrator,
            participants,
            batch=batch,
            workers=workers,
            timer_interval=self.timer_interval,
            turn_wait=turn_wait,
        )
        return self

    def relay(self, *stores: SagaStore) -> Runtime:
        """Publish these stores' outboxes too (a relay process runs only this)."""
        for store in stores:
            self._stores.setdefault(id(store), store)
        return self

    @property
    def running(self) -> bool:
        return self._running

    @property
    def stores(self) -> list[SagaStore]:
        """Every store this runtime relays or consumes for, fused orchestrators' too."""
        every = dict(self._stores)
        for engine in self.fused.values():
            every.setdefault(id(engine.store), engine.store)
        return list(every.values())

    async def start(self) -> None:
        if self._running:
            return
        await check_stores(self.stores, migrate=self.migrate)
        self._running = True
        if self.tune_collector:
            gc_tuning.tune()
        await self.transport.start()
        # Asked before this process declares other processes' queues (below).
        served = {consumer.queue for consumer in self.consumers}
        await warn_unserved(self.consumers, served, self.transport)
        await declare_queues(self.transport, self.consumers)
        for consumer in self.consumers:
            self._subscriptions.append(
                await subscribe(self.transport, consumer, prefetch=self.prefetch)
            )
        for orchestrator in self.orchestrators if self.run_timers else ():
            loop = timer_loop(orchestrator, self.timer_interval)
            self._loops.spawn(f"timers:{orchestrator.group}", loop)
        fused = {id(engine.store) for engine in self.fused.values()}
        for key in self._committing - fused if self.publish_on_commit else ():
            publisher = attach_publisher(self._stores[key], self.transport, grace=self.relay_grace)
            if publisher is not None:
                self.publishers[key] = publisher
        for key, store in self._stores.items() if self.run_relays else ():
            publishing = self.publishers.get(key)
            relay = OutboxRelay(
                store,
                self.transport,
                batch_size=self.relay_batch,
                poll_interval=self.relay_poll,
                caught_up=publishing.caught_up if publishing else None,
            )
            self.relays[key] = relay
            self._loops.spawn(f"relay:{store.url}", relay.run)
            pruning = prune_loop(
                store, interval=self.prune_interval, retention=self.outbox_retention
            )
            self._loops.spawn(f"prune:{store.url}", pruning)
        for engine in self.fused.values():
            engine.ticks = self.run_timers
            await engine.start()

    async def outbox_lag(self) -> dict[str, float]:
        """Seconds the oldest unsent message of each store has waited (0 when none)."""
        now = time.time()
        return {store.url: await store.outbox_lag(now) for store in self._stores.values()}

    async def stop(self, *, grace: float = 2.0) -> None:
        """Stop everything within about ``grace`` seconds, whatever a handler is doing.

        Relays first get up to half the grace to have the batches they published
        confirmed and marked sent, so a clean stop leaves no needless redelivery. Then
        consumers take no more messages, and the batches in their handlers get the rest
        of the grace to finish and commit; what has not finished by then is cancelled,
        its transaction rolled back and its messages handed back unacknowledged (another
        replica, or this process on its next start, takes them). The loops go last."""
        if not self._running:
            return
        self._running = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(grace, 0.0)

        def left() -> float:
            return max(deadline - loop.time(), 0.0)

        half = loop.time() + left() / 2
        for relay in self.relays.values():
            await relay.settle(max(half - loop.time(), 0.0))
        for publisher in self.publishers.values():
            await publisher.close(max(half - loop.time(), 0.0))
        self.publishers.clear()
        await asyncio.gather(
            *(sub.stop(grace=left()) for sub in self._subscriptions),
            *(engine.stop(grace=left()) for engine in self.fused.values()),
        )
        self._subscriptions.clear()
        await self._loops.cancel()
        try:
            await asyncio.wait_for(self.transport.close(), max(left(), CLOSE_WAIT))
        except TimeoutError:
            log.warning("the transport did not close in time; leaving it")

    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def wait_for(
        self,
        store: SagaStore,
        saga_ids: Iterable[str],
        *,
        timeout: float = 30.0,
        poll: float = 0.02,
    ) -> dict[str, str]:
        """Deprecated: wait through the sagas' handles, ``await handle.outcome()`` or
        ``await sagakit.outcomes(handles)`` (``SagaHandle(saga_id, store)`` for an id)."""
        return await _wait_by_id("Runtime.wait_for", store, saga_ids, timeout, poll)


async def wait_terminal(
    store: SagaStore, saga_ids: Iterable[str], *, timeout: float = 30.0, poll: float = 0.02
) -> dict[str, str]:
    """Deprecated: wait through the sagas' handles, ``await handle.outcome()`` or
    ``await sagakit.outcomes(handles)`` (``SagaHandle(saga_id, store)`` for an id)."""
    return await _wait_by_id("wait_terminal", store, saga_ids, timeout, poll)


async def _wait_by_id(
    name: str, store: SagaStore, saga_ids: Iterable[str], timeout: float, poll: float
) -> dict[str, str]:
    warnings.warn(
        f"{name} is deprecated: use await sagakit.outcomes(handles) "
        "(SagaHandle(saga_id, store) for a saga id) or await handle.outcome()",
        DeprecationWarning,
        stacklevel=3,
    )
    return await store.wait_ended(list(saga_ids), timeout=timeout, poll=poll)
