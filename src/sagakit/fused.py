"""The fused fast path: sagas whose participants all live in the orchestrator's process
and share its store.

When a participant's tables and the orchestrator's log are in one database, the hop
between them needs no transport and no second transaction. :class:`FusedRuntime` runs
each step as ONE local transaction holding, together: the participant's inbox row (the
barrier), its business writes, the orchestrator's decision on the outcome (log events,
projection) and the next command in the outbox. Many sagas' steps share a transaction
under load, so a saga of N steps costs at most N commits, and far fewer per saga when
many run at once.

Nothing about the guarantees changes; the transaction boundaries only widen:

* the next step's command is not written to the outbox: the same transaction appends
  its request to the saga's log (``StepRequested``: message id, attempt, and the data
  the payload is made of), and this process runs it from memory. A runtime that starts
  rebuilds every request of its participants still unanswered in the log and runs it
  (:func:`sagakit.decide.outstanding`); the inbox turns a second run into the stored
  outcome. Commands from anywhere else (a timer's retry, an operator, an orchestrator in
  another process, a lock release) still come through the outbox, and the transaction
  that runs one marks it sent. Another runtime on the same store does not take over a
  dead one's steps while it runs; their deadlines retry them through the outbox. A
  runtime that starts next to live ones also runs their steps in flight once: the inbox
  and the log's version check make that wasted work, never a second effect;
* saga states are cached between steps, but every append is checked against the log's
  version (a primary key), so a timer or another process that moved a saga meanwhile
  makes the batch roll back and run again from the store;
* retries and deadlines are fired by the orchestrator's own timer code, whose commands
  are picked up from the outbox;
* a handler runs without its own savepoint (one round trip, and one subtransaction, per
  step saved). A handler that fails before it touched the connection has nothing to undo;
  one that fails after it did aborts the whole batch, which runs again with a savepoint
  around that step alone;
* the writes handlers hand to :meth:`StepContext.write` wait in the batch and go out
  grouped, each group of the same statement as one pipelined ``executemany``, before the
  next statement on the connection or before the decisions: one round trip per kind of
  write instead of one per step. A failed handler's waiting writes are dropped (nothing
  to undo). A group that fails aborts the batch, which runs again with those sagas'
  writes sent one by one, so the failure lands on the step that caused it.

It decides with the orchestrator's own pieces (its clock, its routing rules, the pure
:func:`sagakit.decide.decide`), reaching for three of its private helpers until the
orchestrator offers "decide these outcomes inside this unit" as public API.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from sagakit import collector
from sagakit.batching import BatchInbox, HandlerTimedOut, Unbatch
from sagakit.breakers import load as load_breakers
from sagakit.breakers import save as save_breakers
from sagakit.contracts import check_start
from sagakit.decide import Decision, Reply, Start, decide, outstanding
from sagakit.definition import StepKind
from sagakit.errors import ConcurrencyError, StoreError
from sagakit.locks import release_saga
from sagakit.log import SagaState, SagaStatus
from sagakit.logs import get_logger
from sagakit.messages import RELEASE, Envelope, Outgoing, command_queue, new_id
from sagakit.orchestrator import Orchestrator, StartRequest
from sagakit.participant import Participant
from sagakit.ports import Loaded, UnitOfWork
from sagakit.stores.schema import saga_outbox, sagas

log = get_logger("sagakit.fused")

_FAILED_BATCH_PAUSE = 0.05
_CANCEL_WAIT = 0.5  # seconds cancelled workers get to roll back before a stop returns
_RECOVER_CHUNK = 500  # sagas read at once when a runtime starts (_recover)
_RELEASE = f".{RELEASE}"


@dataclass(slots=True)
class _Start:
    definition: str
    data: Mapping[str, Any]
    saga_id: str
    key: str | None
    version: int | None
    done: asyncio.Future[str]
    #: A batch with this start in it conflicted: look for the saga in the store first.
    doubted: bool = False


@dataclass(slots=True)
class _Batch:
    starts: list[_Start] = field(default_factory=list)
    commands: list[Envelope] = field(default_factory=list)


class _TurnTimeout(BaseException):
    """A transaction waited longer than ``turn_wait`` for the runtime's turn: it rolls
    back, releasing its locks, and runs again. A BaseException, so no handler's
    catch-all takes it for the step's own failure."""


class _Turn:
    """One transaction's hold on the runtime's turn for rows other sagas share."""

    __slots__ = ("_lock", "_wait", "held")

    def __init__(self, lock: asyncio.Lock, wait: float) -> None:
        self._lock = lock
        self._wait = wait
        self.held = False

    async def take(self) -> None:
        if self.held:
            return
        try:
            await asyncio.wait_for(self._lock.acquire(), self._wait)
        except TimeoutError:
            raise _TurnTimeout(f"waited {self._wait:g}s for the turn") from None
        self.held = True

    def give(self) -> None:
        if self.held:
            self.held = False
            self._lock.release()


class FusedRuntime:
    """Runs an orchestrator and its participants in one process, one transaction a step.

    Every participant of every definition must be given, and every one must use the
    orchestrator's store. ``batch`` bounds the steps one transaction carries;
    ``workers`` transactions run at once (more overlap database waits with Python work).
    On start it sets the garbage collector for a runtime's allocations once per process
    (:mod:`sagakit.collector`) unless ``tune_collector`` is False.
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
        tune_collector: bool = True,
        turn_wait: float = 5.0,
    ) -> None:
        self.orchestrator = orchestrator
        self.store = orchestrator.store
        self.participants = {p.name: p for p in participants}
        needed = {
            step.participant
            for definition in orchestrator.definitions
            for step in definition.steps
            if step.kind is not StepKind.APPROVAL  # a person answers those, not a participant
        }
        missing = needed - set(self.participants)
        if missing:
            raise ValueError(f"the fused runtime needs every participant; missing {missing}")
        for participant in self.participants.values():
            if participant.store is not self.store:
                raise ValueError(
                    f"participant {participant.name!r} has a store of its own; the fused "
                    "runtime needs every participant on the orchestrator's store"
                )
        if hasattr(self.store, "notify_outbox"):
            # No relay publishes our commands (it would run them twice), so there is no
            # other process to wake when they are written.
            self.store.notify_outbox = False
        self.batch = batch
        self.workers = workers
        self.tune_collector = tune_collector
        self.timer_interval = timer_interval
        self.sweep_interval = sweep_interval
        self.turn_wait = turn_wait
        self._stopping = False
        self._destinations = {command_queue(name): name for name in self.participants}
        # How the store reads a driver error (a write failed, or the database did).
        self._translate: Callable[[Any], Exception] = getattr(
            self.store, "_translate", lambda exc: exc
        )
        self._starts: deque[_Start] = deque()
        self._commands: deque[Envelope] = deque()
        self._known: set[str] = set()  # command ids queued or running here
        self._unwritten: set[str] = set()  # ... of which no outbox row holds (run from memory)
        self._recent: set[str] = set()  # command ids run since the last sweep began
        self._busy: set[str] = set()  # sagas in a batch right now: one batch per saga
        self._states: dict[str, SagaState] = {}
        self._unbatched: set[str] = set()  # sagas whose writes go one by one (Unbatch)
        self._breakers_loaded: set[str] = set()
        self._waiters: dict[str, list[asyncio.Future[str]]] = {}
        self._wake = asyncio.Event()
        self._turn = asyncio.Lock()  # the last stretch of a transaction (_transaction)
        self._tasks: list[asyncio.Task[None]] = []
        self.transactions = 0
        #: Batches rolled back and run again, by why: "conflict" (another writer, or a
        #: transient database error), "unbatch" (Unbatch), "timeout" (a handler ran past
        #: its step's timeout), "turn" (waited too long for the turn), "error".
        self.retries: Counter[str] = Counter()

    # ------------------------------------------------------------------ public

    async def start(self) -> None:
        """Pick up unsent commands and unanswered steps left by an earlier process, then
        start working."""
        if self.tune_collector:
            collector.tune()
        await self._sweep()
        await self._recover()
        for number in range(self.workers):
            self._tasks.append(asyncio.create_task(self._work(), name=f"fused:{number}"))
        self._tasks.append(asyncio.create_task(self._timers(), name="fused:timers"))

    async def stop(self, *, grace: float = 2.0) -> None:
        """Stop within about ``grace`` seconds, whatever a handler is doing: workers take
        no more batches, and the ones in flight get the grace to commit; then they are
        cancelled, their transactions rolled back (the log still holds their requests,
        so the next start runs them again) and the loops stopped."""
        self._stopping = True
        self._wake.set()
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
        while self._starts:  # never taken: their callers must not wait for ever
            item = self._starts.popleft()
            if not item.done.done():
                item.done.set_exception(RuntimeError("the fused runtime stopped first"))

    async def __aenter__(self) -> FusedRuntime:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    async def begin(
        self,
        definition: str,
        data: Mapping[str, Any],
        *,
        saga_id: str | None = None,
        key: str | None = None,
        version: int | None = None,
    ) -> str:
        """Start a saga (its first step runs in the same transaction); return its id once
        that transaction committed. Starting an id that exists does nothing."""
        request = StartRequest(definition, data, saga_id=saga_id, key=key, version=version)
        # Refuse unknown names, and data that breaks a step's contract, now.
        check_start(self.orchestrator.definition(request.definition, request.version), request.data)
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        item = _Start(
            request.definition, request.data, request.saga_id or new_id(), key, version, done
        )
        self._starts.append(item)
        self._wake.set()
        return await done

    def wait(self, saga_id: str) -> asyncio.Future[str]:
        """A future for the saga's final status (completed, compensated, needs_attention)."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(saga_id, []).append(future)
        return future

    async def run(
        self,
        definition: str,
        data: Mapping[str, Any],
        *,
        saga_id: str | None = None,
        key: str | None = None,
    ) -> str:
        """Start a saga and return its final status."""
        saga_id = saga_id or new_id()
        ended = self.wait(saga_id)
        try:
            await self.begin(definition, data, saga_id=saga_id, key=key)
        except BaseException:
            self._drop_waiter(saga_id, ended)
            raise
        return await ended

    @property
    def cached_sagas(self) -> int:
        """Sagas whose state is held in memory now: only those with a step queued here."""
        return len(self._states)

    # ------------------------------------------------------------------ the loop

    async def _work(self) -> None:
        while not self._stopping:
            batch = self._take()
            if not batch.starts and not batch.commands:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                await self._run_batch(batch)
            finally:
                self._busy.difference_update(e.saga_id for e in batch.commands)
                self._busy.difference_update(s.saga_id for s in batch.starts)
                if self._commands or self._starts:
                    self._wake.set()

    def _take(self) -> _Batch:
        """Up to ``batch`` steps, none of a saga another worker holds (a saga's cached
        state is only ever changed by one transaction at a time)."""
        batch = _Batch()
        held: list[Envelope] = []
        mine: set[str] = set()
        while self._commands and len(batch.commands) < self.batch:
            env = self._commands.popleft()
            if env.saga_id in self._busy and env.saga_id not in mine:
                held.append(env)
                continue
            self._busy.add(env.saga_id)
            mine.add(env.saga_id)
            batch.commands.append(env)
        self._commands.extendleft(reversed(held))
        waiting: list[_Start] = []
        while self._starts and len(batch.starts) + len(batch.commands) < self.batch:
            item = self._starts.popleft()
            if item.saga_id in self._busy:
                waiting.append(item)
                continue
            self._busy.add(item.saga_id)
            batch.starts.append(item)
        self._starts.extendleft(reversed(waiting))
        return batch

    async def _run_batch(self, batch: _Batch) -> None:
        try:
            decisions, onward = await self._transaction(batch)
        except HandlerTimedOut:
            self.retries["timeout"] += 1  # its participant answers it, unrun, next time
            self._forget(batch)
            self._requeue(batch)
            return
        except _TurnTimeout:
            # Rolled back, so whatever waited on this transaction's locks goes on; a
            # short random pause keeps the two from meeting the same way again.
            self.retries["turn"] += 1
            log.warning("a fused batch waited too long for the turn; running it again")
            self._forget(batch)
            self._requeue(batch)
            await asyncio.sleep(random.uniform(0.01, 0.05))  # noqa: S311 - not for secrets
            return
        except Unbatch as unbatch:
            self.retries["unbatch"] += 1
            self._unbatched.update(unbatch.saga_ids)
            self._forget(batch)
            self._requeue(batch)
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
            self._requeue(batch)
            await asyncio.sleep(0 if retry else _FAILED_BATCH_PAUSE)
            return
        except Exception as exc:
            self.retries["error"] += 1
            log.exception("fused batch failed; trying it again shortly")
            self._forget(batch)
            for item in batch.starts:
                self._busy.discard(item.saga_id)
                if not item.done.done():
                    item.done.set_exception(exc)
            batch.starts.clear()
            self._requeue(batch)
            await asyncio.sleep(_FAILED_BATCH_PAUSE)
            return
        self.transactions += 1
        if self._unbatched:
            self._unbatched -= {d.state.saga_id for d in decisions}
        for env in batch.commands:
            self._known.discard(env.message_id)
            self._unwritten.discard(env.message_id)
            self._recent.add(env.message_id)
        for item in batch.starts:
            if not item.done.done():
                item.done.set_result(item.saga_id)
        self._after_commit(decisions, onward)

    def _after_commit(
        self, decisions: Iterable[Decision], onward: Mapping[str, list[Outgoing]]
    ) -> None:
        for decision in decisions:
            state = decision.state
            if state.status.terminal:
                self._resolve(state.saga_id, state.status)
            unwritten = onward.get(state.saga_id, [])
            self._unwritten.update(c.envelope.message_id for c in unwritten)
            local = [c for c in decision.commands if c.destination in self._destinations]
            local.extend(unwritten)
            # Only a saga whose next step runs here keeps its state in memory: one that
            # waits (an approval, a retry's backoff, a long timer) is read back from the
            # store when it moves, so waiting sagas cost no memory here.
            if local and not state.status.terminal:
                self._states[state.saga_id] = state
            else:
                self._states.pop(state.saga_id, None)
            for out in local:
                self._known.add(out.envelope.message_id)
                self._commands.append(out.envelope)
        if self._commands:
            self._wake.set()

    def _forget(self, batch: _Batch) -> None:
        for env in batch.commands:
            self._states.pop(env.saga_id, None)
        for item in batch.starts:
            self._states.pop(item.saga_id, None)

    def _requeue(self, batch: _Batch) -> None:
        self._commands.extendleft(reversed(batch.commands))
        self._starts.extendleft(reversed(batch.starts))
        self._wake.set()

    # ------------------------------------------------------------------ one transaction

    async def _transaction(self, batch: _Batch) -> tuple[list[Decision], dict[str, list[Outgoing]]]:
        """Run ``batch`` in one transaction; return its decisions and, apart from them,
        the commands they chain to our own participants (run from memory, no outbox).

        Rows other sagas share (business rows, semantic locks, breakers) are written by
        one transaction at a time: a transaction takes the runtime's turn before its
        first statement that may lock one (a handler's first statement, the held writes
        or a release of locks) and keeps it until just before COMMIT, which waits for
        nothing. So no transaction of this runtime ever waits for the turn while
        holding such a row, and the database sees every other wait: the turn and the
        database's locks never make a cycle it cannot see. Everything before (claims,
        decisions, the append of a batch whose handlers only held writes) overlaps
        freely. A wait for the turn is bounded all the same (``turn_wait``): a cycle
        through another process's transactions is broken by rolling back."""
        turn = _Turn(self._turn, self.turn_wait)
        onward: dict[str, list[Outgoing]] = {}
        try:
            async with self.store.unit() as unit:
                decisions: dict[str, Decision] = {}
                chained = await self._decide_starts(unit, batch.starts, decisions)
                commands = [*chained, *batch.commands]
                releases = [env for env in commands if env.type.endswith(_RELEASE)]
                if releases:
                    commands = [env for env in commands if not env.type.endswith(_RELEASE)]
                    await turn.take()
                    await self._release(unit, releases)
                await self._load_breakers(unit, commands)
                inbox = BatchInbox(
                    unit, unbatched=self._unbatched, translate=self._translate, before_use=turn.take
                )
                if len(commands) > 1:
                    await inbox.preclaim_commands([(self._consumer_of(e), e) for e in commands])
                outcomes = [await self._execute(inbox, env) for env in commands]
                await self._decide_outcomes(unit, outcomes, decisions)
                inbox.check_used()
                for decision in decisions.values():
                    mine = self._take_local(decision)
                    if mine:
                        onward[decision.state.saga_id] = mine
                # The commands this batch ran from the outbox leave it with its append.
                sent = [e.message_id for e in batch.commands if e.message_id not in self._unwritten]
                replies = inbox.take_replies()  # stored by the append's statement
                await unit.append(list(decisions.values()), sent=sent, replies=replies)
                await turn.take()
                await inbox.flush_writes()
                for participant in self.participants.values():
                    await save_breakers(unit.connection, list(participant.breakers.values()))
                # The turn passes on before the COMMIT, which takes no lock: the next
                # transaction's writes wait in the database, for this commit, only
                # where they touch the same rows.
                turn.give()
        finally:
            turn.give()
        return list(decisions.values()), onward

    def _runs_here(self, out: Outgoing) -> bool:
        """A step's command for one of our participants: run from memory (a release of
        locks, which has no step, goes through the outbox: a saga that has ended is
        not read again to find it)."""
        return out.destination in self._destinations and out.envelope.step is not None

    def _take_local(self, decision: Decision) -> list[Outgoing]:
        """Take the commands that run here out of ``decision`` (one pass); return them."""
        mine: list[Outgoing] = []
        rest: list[Outgoing] = []
        for out in decision.commands:
            (mine if self._runs_here(out) else rest).append(out)
        if mine:
            decision.commands = rest
        return mine

    def _queue(self, env: Envelope, *, unwritten: bool) -> None:
        """Queue a command found in the store; ``unwritten``: it has no outbox row."""
        self._known.add(env.message_id)
        if unwritten:
            self._unwritten.add(env.message_id)
        self._commands.append(env)

    async def _release(self, unit: UnitOfWork, releases: Sequence[Envelope]) -> None:
        """A finished saga's semantic locks, freed at each participant that held one (what
        Participant.handle does with the same command)."""
        for env in releases:
            name = self._destinations[_queue_of(env)]
            await release_saga(unit.connection, env.saga_id, name)

    async def _load_breakers(self, unit: UnitOfWork, commands: Sequence[Envelope]) -> None:
        """Each participant's circuit breakers as a previous process left them, once."""
        for env in commands:
            participant = self.participants[self._destinations[_queue_of(env)]]
            if participant.name in self._breakers_loaded or not participant.breakers:
                continue
            await load_breakers(unit.connection, list(participant.breakers.values()))
            self._breakers_loaded.add(participant.name)

    async def _decide_starts(
        self, unit: UnitOfWork, starts: Sequence[_Start], decisions: dict[str, Decision]
    ) -> list[Envelope]:
        """Decide each new saga and hand back its first commands, to run in this same
        transaction (they never need an outbox row).

        A start is taken to be new without asking the store (one round trip a batch
        saved): a saga that exists makes the append's first event clash with its own,
        the batch runs again, and this time its starts are looked for first."""
        if not starts:
            return []
        doubted = [s.saga_id for s in starts if s.doubted]
        existing = await unit.load(doubted) if doubted else Loaded()
        now = await self._now(unit)
        chained: list[Envelope] = []
        for item in starts:
            if item.saga_id in existing.states or item.saga_id in existing.broken:
                # Already started: starting is idempotent. One that has ended answers
                # whoever waits for it now; one still going, when it ends.
                found = existing.states.get(item.saga_id)
                if found is not None and found.status.terminal:
                    self._resolve(item.saga_id, found.status)
                continue
            if item.saga_id in decisions:
                continue
            definition = self.orchestrator.definition(item.definition, item.version)
            trigger = Start(item.saga_id, dict(item.data), item.key)
            rules = await self.orchestrator._current_rules(unit, definition.name)
            decision = decide(
                definition,
                None,
                trigger,
                now=now,
                reply_to=self.orchestrator.reply_queue,
                rules=rules,
            )
            chained.extend(c.envelope for c in self._take_local(decision))
            decisions[item.saga_id] = decision
        return chained

    def _consumer_of(self, env: Envelope) -> str:
        return self.participants[self._destinations[_queue_of(env)]].consumer

    async def _execute(self, inbox: BatchInbox, env: Envelope) -> tuple[Envelope, Reply]:
        participant = self.participants[self._destinations[_queue_of(env)]]
        command = env.type.split(".", 1)[1]
        inbox.begin(env)
        try:
            body = await participant.execute(inbox.unit, env, participant.handler(command))
        except HandlerTimedOut as late:
            participant.note_timeout(late)
            raise
        reply = Reply(
            step=env.step or "",
            op=env.op or "action",
            attempt=env.attempt,
            message_id=new_id(),
            body=body,
        )
        return env, reply

    async def _decide_outcomes(
        self,
        unit: UnitOfWork,
        outcomes: Sequence[tuple[Envelope, Reply]],
        decisions: dict[str, Decision],
    ) -> None:
        # What the cache holds is taken now: the timer loop may clear it while this
        # awaits, and a saga missing from both would go undecided. A stale state is
        # safe: its append conflicts and the batch runs again from the store.
        ids = {env.saga_id for env, _ in outcomes} - decisions.keys()
        cached = {sid: self._states[sid] for sid in ids if sid in self._states}
        wanted = ids - cached.keys()
        loaded = await unit.load(sorted(wanted)) if wanted else None
        now = await self._now(unit)
        for env, reply in outcomes:
            prior = decisions.get(env.saga_id)
            state = prior.state if prior is not None else _state(env.saga_id, cached, loaded)
            if state is None:
                log.error("a command for a saga that is not in the store", saga_id=env.saga_id)
                continue
            definition = self.orchestrator.definition(state.definition, state.definition_version)
            rules = await self.orchestrator._pinned_rules(unit, state)
            decision = decide(
                definition,
                state,
                reply,
                now=now,
                reply_to=self.orchestrator.reply_queue,
                traceparent=env.traceparent,
                rules=rules,
            )
            decisions[env.saga_id] = _merge(prior, decision)

    async def _now(self, unit: UnitOfWork) -> float:
        # The orchestrator's clock: its own if it has one, else the transaction's (the
        # database's on PostgreSQL), read once per transaction.
        return await self.orchestrator._now(unit)

    # ------------------------------------------------------------------ timers, recovery

    async def _timers(self) -> None:
        loop = asyncio.get_running_loop()
        next_sweep = loop.time() + self.sweep_interval
        while True:
            await asyncio.sleep(self.timer_interval)
            try:
                moved = await self.orchestrator.tick()
                if moved:
                    # The timer decided outside our cache: read those sagas afresh.
                    self._states.clear()
                if moved or loop.time() >= next_sweep:
                    # Commands the timer (or another process) wrote, and ends decided
                    # outside this runtime (a timer, another process), within a sweep.
                    await self._sweep()
                    await self._resolve_from_store()
                    next_sweep = loop.time() + self.sweep_interval
            except (StoreError, ConcurrencyError) as exc:
                log.warning(f"fused timers: {exc}; trying again")

    async def _sweep(self) -> None:
        """Queue every unsent command for our participants that is not queued already."""
        query = (
            select(saga_outbox.c.message_id, saga_outbox.c.body)
            .where(saga_outbox.c.sent_at.is_(None))
            .where(saga_outbox.c.destination.in_(list(self._destinations)))
            .order_by(saga_outbox.c.id)
        )
        self._recent = set()
        async with self.store.unit() as unit:
            rows = list(await unit.connection.execute(query))
        found = 0
        for message_id, body in rows:
            if message_id in self._known or message_id in self._recent:
                continue
            self._queue(Envelope.from_bytes(body.encode()), unwritten=False)
            found += 1
        if found:
            self._wake.set()

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
        query = select(
            sagas.c.saga_id, sagas.c.definition, sagas.c.definition_version, sagas.c.current_step
        ).where(
            sagas.c.status.in_(("running", "compensating")),
            sagas.c.current_step.is_not(None),
            sagas.c.definition.in_(sorted({name for name, _ in mine})),
        )
        async with self.store.unit() as unit:
            rows = list(await unit.connection.execute(query))
        wanted = [
            row.saga_id
            for row in rows
            if mine.get((row.definition, row.definition_version), set()).intersection(
                row.current_step.split(",")
            )
        ]
        found = 0
        reply_to = self.orchestrator.reply_queue
        for first in range(0, len(wanted), _RECOVER_CHUNK):
            async with self.store.unit() as unit:
                loaded = await unit.load(wanted[first : first + _RECOVER_CHUNK], lock=False)
                now = await self._now(unit)
            for state in loaded.states.values():
                definition = self.orchestrator.definition(
                    state.definition, state.definition_version
                )
                for out in outstanding(definition, state, now=now, reply_to=reply_to):
                    if self._runs_here(out) and out.envelope.message_id not in self._known:
                        self._queue(out.envelope, unwritten=True)
                        found += 1
        if found:
            log.info(f"fused runtime: {found} unanswered step(s) found in the log, running them")
            self._wake.set()

    async def _resolve_from_store(self) -> None:
        if not self._waiters:
            return
        statuses = await self.store.statuses(list(self._waiters))
        for saga_id, status in statuses.items():
            if SagaStatus(status).terminal:
                self._resolve(saga_id, SagaStatus(status))

    def _resolve(self, saga_id: str, status: SagaStatus) -> None:
        for future in self._waiters.pop(saga_id, []):
            if not future.done():
                future.set_result(status.value)

    def _drop_waiter(self, saga_id: str, future: asyncio.Future[str]) -> None:
        waiting = self._waiters.get(saga_id, [])
        if future in waiting:
            waiting.remove(future)
        if not waiting:
            self._waiters.pop(saga_id, None)


def _state(saga_id: str, cached: Mapping[str, SagaState], loaded: Any) -> SagaState | None:
    if saga_id in cached:
        return cached[saga_id]
    if loaded is None:
        return None
    state: SagaState | None = loaded.states.get(saga_id)
    return state


def _queue_of(env: Envelope) -> str:
    return command_queue(env.type.split(".", 1)[0])


def _merge(first: Decision | None, later: Decision) -> Decision:
    if first is None:
        return later
    first.events.extend(later.events)
    first.commands.extend(later.commands)
    first.state = later.state
    return first


__all__ = ["FusedRuntime"]
