"""The runtime: owns everything that runs in a process, and stops it cleanly.

Give it a transport, orchestrators and participants; it declares their queues, starts
their consumers, a publisher for each of their stores (what a transaction commits to
the outbox is published straight after the commit), one outbox relay per store (for
what a publisher did not get confirmed) and one timer loop per orchestrator, and
restarts any loop that fails (a database restart, a dropped connection).
"""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import Protocol

from sagakit.engine import gc_tuning
from sagakit.engine.fused.engine import FusedEngine
from sagakit.engine.orchestrator import Orchestrator
from sagakit.engine.participant import Participant
from sagakit.engine.publisher import OutboxPublisher
from sagakit.engine.relay import OutboxRelay
from sagakit.engine.startup import check_stores, warn_unserved
from sagakit.observe.logs import get_logger
from sagakit.ports import Delivery, SagaStore, Subscription, Transport
from sagakit.transports.memory import MemoryTransport

log = get_logger("sagakit.runtime")

#: Seconds a stop gives cancelled loops, and the transport's close, at the least.
_CLOSE_WAIT = 0.5


async def _cancel(tasks: Sequence[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait, briefly, for them to unwind; one that will not (a driver
    that does not let go) is left behind, logged, so a stop always returns."""
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    _, stuck = await asyncio.wait(tasks, timeout=_CLOSE_WAIT)
    for task in stuck:
        log.warning(f"{task.get_name()} did not end when cancelled; leaving it behind")


class Consumer(Protocol):
    """What the runtime runs: something with a store, a queue, and a batch handler.

    Orchestrators, participants, choreographed participants and trackers all are.
    ``bindings`` are event patterns the queue also receives.
    """

    @property
    def store(self) -> SagaStore: ...

    @property
    def queue(self) -> str: ...

    @property
    def bindings(self) -> Sequence[str]: ...

    async def handle(self, deliveries: Sequence[Delivery]) -> None: ...


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
        self._tasks: list[asyncio.Task[None]] = []
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
        # Every queue exists before anything is published: this process's own, and every
        # queue of a choreography it takes part in (an event is delivered only to the
        # queues bound when it is published; see Choreography.topology).
        topology: dict[str, set[str]] = {}
        for consumer in self.consumers:
            topology.setdefault(consumer.queue, set()).update(consumer.bindings)
            for queue, patterns in getattr(consumer, "topology", {}).items():
                topology.setdefault(queue, set()).update(patterns)
        for queue, patterns in topology.items():
            await self.transport.declare(queue)
            for pattern in sorted(patterns):
                await self.transport.bind(queue, pattern)
        for consumer in self.consumers:
            # A participant handles several batches at once, so a handler that hangs
            # holds its own batch and not the participant (Participant.concurrency).
            self._subscriptions.append(
                await self.transport.consume(
                    consumer.queue,
                    consumer.handle,
                    prefetch=self.prefetch,
                    concurrency=getattr(consumer, "concurrency", 1),
                )
            )
        for orchestrator in self.orchestrators if self.run_timers else ():
            self._spawn(f"timers:{orchestrator.group}", self._timer_loop(orchestrator))
        fused = {id(engine.store) for engine in self.fused.values()}
        for key in self._committing - fused if self.publish_on_commit else ():
            if getattr(self._stores[key], "publisher_grace", None) is not None:
                continue  # another runtime here publishes this store's commits on its transport
            publisher = OutboxPublisher(self._stores[key], self.transport, grace=self.relay_grace)
            publisher.attach()
            self.publishers[key] = publisher
        for key, store in self._stores.items():
            if not self.run_relays:
                break
            publishing = self.publishers.get(key)
            relay = OutboxRelay(
                store,
                self.transport,
                batch_size=self.relay_batch,
                poll_interval=self.relay_poll,
                caught_up=publishing.caught_up if publishing else None,
            )
            self.relays[key] = relay
            self._spawn(f"relay:{store.url}", relay.run)
            self._spawn(f"prune:{store.url}", self._prune_loop(store))
        for engine in self.fused.values():
            engine.ticks = self.run_timers
            await engine.start()

    def _spawn(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        self._tasks.append(asyncio.create_task(self._supervise(name, loop), name=name))

    async def _supervise(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await loop()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception(f"{name} failed ({type(exc).__name__}); restarting")
                await asyncio.sleep(self.restart_delay)

    def _timer_loop(self, orchestrator: Orchestrator) -> Callable[[], Awaitable[None]]:
        async def loop() -> None:
            while True:
                if await orchestrator.tick() == 0:
                    await asyncio.sleep(self.timer_interval)

        return loop

    def _prune_loop(self, store: SagaStore) -> Callable[[], Awaitable[None]]:
        async def loop() -> None:
            while True:
                await asyncio.sleep(self.prune_interval)
                cutoff = time.time() - self.outbox_retention
                pruned = await store.prune_outbox(sent_before=cutoff)
                if pruned:
                    log.info(f"pruned {pruned} sent outbox row(s) from {store.url}")

        return loop

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
        await _cancel(self._tasks)
        self._tasks.clear()
        try:
            await asyncio.wait_for(self.transport.close(), max(left(), _CLOSE_WAIT))
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
