"""The fused engine: the workers, timers and recovery that run an orchestrator's steps
inside its own transactions. ``Runtime.fuse`` makes one and runs it.

Its parts: the queue of starts and steps (:mod:`~sagakit.engine.fused.queue`), the one
transaction a batch runs in (:mod:`~sagakit.engine.fused.transaction`), what follows a
batch's commit or rollback (:mod:`~sagakit.engine.fused.batches`) and the work found in
the store rather than in memory (:mod:`~sagakit.engine.fused.recovery`)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable, Mapping

from sagakit.engine.fused.batches import BatchRunner
from sagakit.engine.fused.queue import Start, StepQueue
from sagakit.engine.fused.recovery import Recovery
from sagakit.engine.fused.transaction import Transactions
from sagakit.engine.orchestrator import Orchestrator, StartRequest
from sagakit.engine.participant import Participant
from sagakit.errors import ConcurrencyError, StoreError
from sagakit.model.definition import StepKind
from sagakit.observe.logs import get_logger

log = get_logger("sagakit.fused")

_CANCEL_WAIT = 0.5  # seconds cancelled workers get to roll back before a stop returns


class FusedEngine:
    """Runs an orchestrator and its participants in one process, one transaction a step.

    Every participant of every definition must be given, and every one must use the
    orchestrator's store. ``batch`` bounds the steps one transaction carries;
    ``workers`` transactions run at once (more overlap database waits with Python work);
    ``turn_wait`` bounds a transaction's wait for the turn on shared rows.
    """

    def __init__(
        self,
        orchestrator: Orchestrator,
        participants: Iterable[Participant],
        *,
        batch: int = 128,
        workers: int = 2,
        timer_interval: float = 0.1,
        sweep_interval: float = 1.0,
        turn_wait: float = 5.0,
    ) -> None:
        self.orchestrator = orchestrator
        self.store = orchestrator.store
        self.participants = {p.name: p for p in participants}
        _check(orchestrator, self.participants)
        if hasattr(self.store, "notify_outbox"):
            # No relay publishes this engine's commands (it runs them itself), so there
            # is no other process to wake when they are written.
            self.store.notify_outbox = False
        self.workers = workers
        self.timer_interval = timer_interval
        self.sweep_interval = sweep_interval
        self.queue = StepQueue(batch)
        self.transactions = Transactions(orchestrator, self.participants, turn_wait=turn_wait)
        self.recovery = Recovery(orchestrator, self.participants, self.queue, self.transactions)
        self.batches = BatchRunner(orchestrator, self.queue, self.transactions, self.recovery)
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        #: Whether this engine fires the orchestrator's timers (not when a test's fake
        #: clock owns time: ``Runtime(timers=False)``).
        self.ticks = True

    @property
    def committed(self) -> int:
        """Transactions committed."""
        return self.batches.committed

    @property
    def retries(self) -> Counter[str]:
        """Batches rolled back and run again, by why (see :class:`BatchRunner`)."""
        return self.batches.retries

    @property
    def cached_sagas(self) -> int:
        """Sagas whose state is held in memory now: only those with a step queued here."""
        return len(self.transactions.states)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Pick up unsent commands and unanswered steps left by an earlier process, take
        over the orchestrator's starts, and start working."""
        await self.recovery.sweep()
        await self.recovery.recover()
        self.orchestrator.hand_starts_to(self.begin)
        for number in range(self.workers):
            self._tasks.append(asyncio.create_task(self._work(), name=f"fused:{number}"))
            # As many again for steps too slow for a shared batch: one that hangs until
            # its timeout holds one of these, never a worker of the shared batches.
            lone = asyncio.create_task(self._work(alone=True), name=f"fused:lone:{number}")
            self._tasks.append(lone)
        self._tasks.append(asyncio.create_task(self._timers(), name="fused:timers"))

    async def stop(self, *, grace: float = 2.0) -> None:
        """Stop within about ``grace`` seconds, whatever a handler is doing: workers take
        no more batches, and the ones in flight get the grace to commit; then they are
        cancelled, their transactions rolled back (the log still holds their requests,
        so the next start runs them again) and the loops stopped."""
        self.orchestrator.hand_starts_to(None)
        self._stopping = True
        self.queue.wake.set()
        self.queue.lone_wake.set()
        workers = [t for t in self._tasks if t.get_name() != "fused:timers"]
        if workers and grace > 0:
            await asyncio.wait(workers, timeout=grace)
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=_CANCEL_WAIT)
            for task in stuck:
                log.warning(f"{task.get_name()} did not end when cancelled; leaving it behind")
        self._tasks.clear()
        self._stopping = False
        self.queue.refuse_waiting("the runtime stopped before this saga started")

    async def begin(self, request: StartRequest) -> str:
        """Start a saga (its first step runs in the same transaction); return its id once
        that transaction committed. The orchestrator's starts come here while the
        engine runs (Orchestrator.hand_starts_to)."""
        if request.saga_id is None:
            raise ValueError("a fused start needs its saga id chosen")
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        item = Start(
            request.definition,
            request.data,
            request.saga_id,
            request.key,
            request.version,
            request.traceparent,
            done,
        )
        self.queue.put_start(item)
        return await done

    # ------------------------------------------------------------------ the loops

    async def _work(self, *, alone: bool = False) -> None:
        wake = self.queue.lone_wake if alone else self.queue.wake
        while not self._stopping:
            batch = self.queue.take(alone=alone)
            if not batch.starts and not batch.commands:
                wake.clear()
                await wake.wait()
                continue
            try:
                await self.batches.run(batch)
            finally:
                self.queue.done(batch)

    async def _timers(self) -> None:
        loop = asyncio.get_running_loop()
        next_sweep = loop.time() + self.sweep_interval
        while True:
            await asyncio.sleep(self.timer_interval)
            try:
                # A step queued or running here is bounded by its handler's timeout,
                # not by the saga's deadline: the wait for a batch is not a try.
                held = self.queue.held() if self.ticks else set()
                moved = await self.orchestrator.tick(held=held) if self.ticks else 0
                if moved:
                    # The timer decided outside our cache: read those sagas afresh.
                    self.transactions.states.clear()
                if moved or loop.time() >= next_sweep:
                    # Commands the timer (or another process) wrote, within a sweep.
                    await self.recovery.sweep()
                    next_sweep = loop.time() + self.sweep_interval
            except (StoreError, ConcurrencyError) as exc:
                log.warning(f"fused timers: {exc}; trying again")


def _check(orchestrator: Orchestrator, participants: Mapping[str, Participant]) -> None:
    needed = {
        step.participant
        for definition in orchestrator.definitions
        for step in definition.steps
        if step.kind is not StepKind.APPROVAL  # a person answers those, not a participant
    }
    missing = needed - set(participants)
    if missing:
        raise ValueError(f"a fused orchestrator needs every participant; missing {missing}")
    for participant in participants.values():
        if participant.store is not orchestrator.store:
            raise ValueError(
                f"participant {participant.name!r} has a store of its own; a fused "
                "orchestrator needs every participant on its store"
            )
