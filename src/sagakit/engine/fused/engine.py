"""The fused engine: the workers, timers and recovery that run an orchestrator's steps
inside its own transactions. ``Runtime.fuse`` makes one and runs it."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Iterable, Mapping

from sagakit.engine.batching import HandlerTimedOut, HandlerTooSlow, Unbatch
from sagakit.engine.fused.queue import Batch, Start, StepQueue
from sagakit.engine.fused.transaction import Transactions, TurnTimeout
from sagakit.engine.orchestrator import Orchestrator, StartRequest
from sagakit.engine.participant import Participant
from sagakit.errors import ConcurrencyError, StoreError
from sagakit.model.decide import outstanding
from sagakit.model.decision import Decision
from sagakit.model.definition import StepKind
from sagakit.model.messages import Envelope, Outgoing, TransportMessage
from sagakit.observe.logs import get_logger
from sagakit.ports import Delivery

log = get_logger("sagakit.fused")

_FAILED_BATCH_PAUSE = 0.05
_CANCEL_WAIT = 0.5  # seconds cancelled workers get to roll back before a stop returns
_RECOVER_CHUNK = 500  # sagas read at once when an engine starts (_recover)


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
        self._known: set[str] = set()  # command ids queued or running here
        self._recent: set[str] = set()  # command ids run since the last sweep began
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        #: Whether this engine fires the orchestrator's timers (not when a test's fake
        #: clock owns time: ``Runtime(timers=False)``).
        self.ticks = True
        #: Transactions committed.
        self.committed = 0
        #: Batches rolled back and run again, by why: "conflict" (another writer, or a
        #: transient database error), "unbatch" (Unbatch), "timeout" (a handler ran past
        #: its step's timeout), "slow" (a handler kept its batch waiting and runs alone
        #: next), "turn" (waited too long for the turn), "error".
        self.retries: Counter[str] = Counter()

    @property
    def cached_sagas(self) -> int:
        """Sagas whose state is held in memory now: only those with a step queued here."""
        return len(self.transactions.states)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Pick up unsent commands and unanswered steps left by an earlier process, take
        over the orchestrator's starts, and start working."""
        await self._sweep()
        await self._recover()
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

    # ------------------------------------------------------------------ the loop

    async def _work(self, *, alone: bool = False) -> None:
        wake = self.queue.lone_wake if alone else self.queue.wake
        while not self._stopping:
            batch = self.queue.take(alone=alone)
            if not batch.starts and not batch.commands:
                wake.clear()
                await wake.wait()
                continue
            try:
                await self._run_batch(batch)
            finally:
                self.queue.done(batch)

    async def _run_batch(self, batch: Batch) -> None:
        try:
            decisions, onward = await self.transactions.run(batch)
        except (HandlerTimedOut, HandlerTooSlow, TurnTimeout, Unbatch) as again:
            self._forget(batch)
            self.queue.requeue(batch)
            await self._again(again)
            return
        except (ConcurrencyError, StoreError) as exc:
            # Another writer moved a saga, or the database hiccuped: forget what is
            # cached about these sagas and run the batch again from the store.
            retry = isinstance(exc, ConcurrencyError) or exc.retryable
            self.retries["conflict" if retry else "error"] += 1
            self._forget(batch)
            if isinstance(exc, ConcurrencyError):
                for item in batch.starts:
                    item.doubted = True
            if not retry:
                log.exception("fused batch failed; trying it again shortly")
            self.queue.requeue(batch)
            await asyncio.sleep(0 if retry else _FAILED_BATCH_PAUSE)
            return
        except Exception as exc:
            self.retries["error"] += 1
            log.exception("fused batch failed; trying it again shortly")
            self._forget(batch)
            for item in batch.starts:
                if not item.done.done():
                    item.done.set_exception(exc)
            self.queue.busy.difference_update(s.saga_id for s in batch.starts)
            batch.starts.clear()
            self.queue.requeue(batch)
            await asyncio.sleep(_FAILED_BATCH_PAUSE)
            return
        self._committed(batch, decisions, onward)

    async def _again(self, why: BaseException) -> None:
        """A batch rolled back to run again, for one of the reasons that is no fault of
        the batch as a whole: count it, and set up what its next run needs."""
        if isinstance(why, HandlerTimedOut):
            self.retries["timeout"] += 1  # its participant answers it, unrun, next time
        elif isinstance(why, HandlerTooSlow):
            # It runs next in a batch of its own; the rest run again without waiting.
            self.retries["slow"] += 1
            self.queue.alone.add(why.step.split("/", 1)[0])
            self.queue.lone_wake.set()
        elif isinstance(why, Unbatch):
            self.retries["unbatch"] += 1
            self.transactions.unbatched.update(why.saga_ids)
        else:
            # Rolled back, so whatever waited on this transaction's locks goes on; a
            # short random pause keeps the two from meeting the same way again.
            self.retries["turn"] += 1
            log.warning("a fused batch waited too long for the turn; running it again")
            await asyncio.sleep(random.uniform(0.01, 0.05))  # noqa: S311 - not for secrets

    def _committed(
        self, batch: Batch, decisions: list[Decision], onward: Mapping[str, list[Outgoing]]
    ) -> None:
        self.committed += 1
        self.orchestrator.committed(decisions)
        tx = self.transactions
        if tx.unbatched:
            tx.unbatched -= {d.state.saga_id for d in decisions}
        for env in batch.commands:
            self._known.discard(env.message_id)
            tx.unwritten.discard(env.message_id)
            self._recent.add(env.message_id)
        for item in batch.starts:
            if not item.done.done():
                item.done.set_result(item.saga_id)
        for decision in decisions:
            state = decision.state
            unwritten = onward.get(state.saga_id, [])
            tx.unwritten.update(c.envelope.message_id for c in unwritten)
            local = [c for c in decision.commands if c.destination in tx.by_queue]
            local.extend(unwritten)
            # Only a saga whose next step runs here keeps its state in memory: one that
            # waits (an approval, a retry's backoff, a long timer) is read back from the
            # store when it moves, so waiting sagas cost no memory here.
            if local and not state.status.terminal:
                tx.states[state.saga_id] = state
            else:
                tx.states.pop(state.saga_id, None)
            for out in local:
                self._known.add(out.envelope.message_id)
                self.queue.put_command(out.envelope)

    def _forget(self, batch: Batch) -> None:
        for saga_id in batch.saga_ids:
            self.transactions.states.pop(saga_id, None)

    def _queue(self, env: Envelope, *, unwritten: bool) -> None:
        """Queue a command found in the store; ``unwritten``: it has no outbox row."""
        self._known.add(env.message_id)
        if unwritten:
            self.transactions.unwritten.add(env.message_id)
        self.queue.put_command(env)

    # ------------------------------------------------------------------ timers, recovery

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
                    await self._sweep()
                    next_sweep = loop.time() + self.sweep_interval
            except (StoreError, ConcurrencyError) as exc:
                log.warning(f"fused timers: {exc}; trying again")

    async def _sweep(self) -> None:
        """Queue every unsent command for our participants that is not queued already,
        and hand the orchestrator what waits for it in the outbox (an operator's action,
        a start message, a reply from a participant elsewhere)."""
        orchestrator = self.orchestrator.reply_queue
        self._recent = set()
        rows = await self.store.unsent([*self.transactions.by_queue, orchestrator])
        ours = [row for row in rows if row.message.destination == orchestrator]
        for row in rows:
            message_id = row.message.message_id
            if row in ours or message_id in self._known or message_id in self._recent:
                continue
            self._queue(Envelope.from_bytes(row.message.body), unwritten=False)
        if ours:
            await self._deliver_to_orchestrator([row.message for row in ours])
            await self.store.mark_sent([row.id for row in ours])

    async def _deliver_to_orchestrator(self, messages: list[TransportMessage]) -> None:
        deliveries = [Delivery(message) for message in messages]
        await self.orchestrator.handle(deliveries)
        for delivery in deliveries:
            if delivery.rejection is not None or delivery.retry_reason is not None:
                why = delivery.rejection or (delivery.retry_reason, "")
                log.warning(
                    f"the orchestrator could not take {delivery.message.message_id}: {why[0]}"
                )

    async def _recover(self) -> None:
        """Queue every step of ours whose request is in a saga's log, unanswered, and in
        no outbox row: what an earlier process was running from memory when it stopped.
        The projection names each running saga's active steps, so only sagas with one
        of ours among them are read (not those waiting on a person or a retry's timer)."""
        mine = {
            (d.name, d.version): {
                step.name
                for step in d.steps
                if step.participant in self.participants and step.kind is not StepKind.APPROVAL
            }
            for d in self.orchestrator.definitions
        }
        rows = await self.store.active(sorted({name for name, _ in mine}))
        wanted = [
            row.saga_id
            for row in rows
            if mine.get((row.definition, row.definition_version), set()).intersection(
                (row.current_step or "").split(",")
            )
        ]
        found = 0
        reply_to = self.orchestrator.reply_queue
        for first in range(0, len(wanted), _RECOVER_CHUNK):
            async with self.store.unit() as unit:
                loaded = await unit.load(wanted[first : first + _RECOVER_CHUNK], lock=False)
                now = await self.orchestrator.now_in(unit)
            for state in loaded.states.values():
                definition = self.orchestrator.definition(
                    state.definition, state.definition_version
                )
                for out in outstanding(definition, state, now=now, reply_to=reply_to):
                    runs_here = self.transactions.runs_here(out)
                    if runs_here and out.envelope.message_id not in self._known:
                        self._queue(out.envelope, unwritten=True)
                        found += 1
        if found:
            log.info(f"fused runtime: {found} unanswered step(s) found in the log, running them")


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
