"""A saga runtime for tests: a temporary SQLite store, the in-process transport, a fake clock.

::

    async with SagaHarness([order_saga], faults=Faults(duplicate=0.1, seed=7)) as h:
        payments = h.participant("payment")
        ...
        saga_id = await h.start("order", {"amount": 50})
        states = await h.run_until_terminal([saga_id])

``run_until_terminal`` jumps the clock to the next retry or deadline whenever the
sagas go quiet, so a test of a 30-second timeout takes milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

from sagakit.clock import FakeClock
from sagakit.engine.handle import SagaHandle
from sagakit.engine.orchestrator import Orchestrator
from sagakit.engine.participant import Participant
from sagakit.engine.runtime import Runtime
from sagakit.model.definition import SagaDefinition
from sagakit.model.events import StoredEvent
from sagakit.model.messages import command_queue
from sagakit.model.state import SagaState
from sagakit.model.status import SagaStatus
from sagakit.observe.logs import get_logger
from sagakit.stores.sqlite import SqliteSagaStore
from sagakit.testing.faults import Faults, FaultyTransport
from sagakit.transports.memory import MemoryTransport

log = get_logger("sagakit.testing.harness")


def _terminal(status: str) -> bool:
    return SagaStatus(status).terminal


class SagaHarness:
    """Everything a saga needs, in one process, with time under the test's control."""

    def __init__(
        self,
        definitions: Iterable[SagaDefinition],
        *,
        faults: Faults | None = None,
        directory: str | Path | None = None,
        snapshot_every: int = 50,
        start_time: float = 1_700_000_000.0,
    ) -> None:
        self._tmp = None if directory else tempfile.TemporaryDirectory(prefix="sagakit-")
        root = Path(directory or (self._tmp.name if self._tmp else "."))
        self.clock = FakeClock(start_time)
        self.store = SqliteSagaStore(
            root / "harness.db", clock=self.clock, snapshot_every=snapshot_every
        )
        self.memory = MemoryTransport(retry_tiers=(0.01, 0.05, 0.1))
        self.faulty = FaultyTransport(self.memory, faults) if faults else None
        self.orchestrator = Orchestrator(self.store, definitions, clock=self.clock)
        # The harness fires timers itself, under one lock with ``advance``: a timer loop
        # of the runtime's own could fire what a jump made due before ``advance`` counts it.
        self.runtime = Runtime(
            self.faulty or self.memory, timers=False, relay_poll=0.05, prefetch=32
        )
        self.runtime.add(self.orchestrator)
        self._participants: dict[str, Participant] = {}
        self._ticking = asyncio.Lock()
        self._timers: asyncio.Task[None] | None = None

    def participant(self, name: str) -> Participant:
        """The participant called ``name``, sharing the harness's store and clock."""
        if name not in self._participants:
            self.add(Participant(name, self.store, clock=self.clock))
        return self._participants[name]

    def add(self, *participants: Participant) -> SagaHarness:
        """Run participants built elsewhere (on ``harness.store``) inside the harness."""
        if self.runtime.running:
            raise RuntimeError("add participants before entering the harness")
        for participant in participants:
            self._participants[participant.name] = participant
            self.runtime.add(participant)
        return self

    async def __aenter__(self) -> SagaHarness:
        await self.store.migrate()
        # Commands for participants nobody runs still route; they wait, unanswered.
        for name in self.orchestrator.participants:
            await self.runtime.transport.declare(command_queue(name))
        await self.runtime.start()
        self._timers = asyncio.create_task(self._timer_loop(), name="harness timers")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._timers is not None:
            self._timers.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timers
        await self.runtime.stop()
        await self.store.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    async def start(self, definition: str, data: Mapping[str, Any], **kwargs: Any) -> SagaHandle:
        """Start a saga; its handle, as ``Orchestrator.start`` gives it."""
        return await self.orchestrator.start(definition, data, **kwargs)

    async def advance(self, by: timedelta | float) -> int:
        """Move the clock and fire whatever became due; return how many sagas woke."""
        async with self._ticking:
            self.clock.advance(by)
            return await self._fire_due()

    async def _fire_due(self) -> int:
        woke = 0
        while count := await self.orchestrator.tick():
            woke += count
        return woke

    async def _timer_loop(self) -> None:
        """Fire what is due without a jump (a retry with no delay), as a runtime would,
        and go on after a failure, as a runtime's supervised loop does."""
        while True:
            try:
                async with self._ticking:
                    await self._fire_due()
            except Exception as exc:
                log.exception(f"harness timers failed ({type(exc).__name__}); going on")
            await asyncio.sleep(0.01)

    async def run_until_terminal(
        self,
        saga_ids: Sequence[str],
        *,
        timeout: float = 10.0,
        quiet: float = 0.02,
        max_jump: timedelta = timedelta(hours=1),
    ) -> dict[str, SagaState]:
        """Let the sagas run; when they go quiet, jump to the next retry or deadline.

        Quiet means no saga moved during one ``quiet`` interval while nothing was in
        flight, or during five intervals whatever is in flight (messages nobody serves).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        before: dict[str, tuple[str, int]] = {}
        still = 0
        while True:
            heads = await self.store.heads(saga_ids)
            pending = [i for i in saga_ids if i not in heads or not _terminal(heads[i][0])]
            if not pending:
                return {i: await self.store.get(i) for i in saga_ids}
            if loop.time() > deadline:
                raise TimeoutError(f"{len(pending)} saga(s) still running: {pending[:5]}")
            still = still + 1 if heads == before else 0
            before = heads
            if still and (still >= 5 or await self._idle()):
                await self._jump(pending, max_jump)
                still = 0
            await asyncio.sleep(quiet)
            if self.faulty is not None:
                await self.faulty.flush()

    async def _idle(self) -> bool:
        return await self.store.unsent_count() == 0 and self._queues_empty()

    def _queues_empty(self) -> bool:
        return all(self.memory.depth(q) == 0 for q in self._queue_names())

    def _queue_names(self) -> list[str]:
        names = [self.orchestrator.reply_queue]
        names.extend(p.queue for p in self._participants.values())
        return names

    async def _jump(self, pending: Sequence[str], max_jump: timedelta) -> None:
        wake = await self.store.next_wake(pending)
        if wake is None:
            return
        gap = max(0.0, min(wake - self.clock.now(), max_jump.total_seconds()))
        await self.advance(gap + 0.001)

    async def state(self, saga_id: str) -> SagaState:
        return await self.store.get(saga_id)

    async def history(self, saga_id: str) -> list[StoredEvent]:
        return await self.store.history(saga_id)
