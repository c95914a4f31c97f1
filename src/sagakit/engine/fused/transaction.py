"""One fused transaction: a batch's starts, its steps' handlers, the orchestrator's
decisions on their outcomes and the next commands, committed together."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from sagakit.engine.batching import BatchInbox, HandlerTimedOut, batch_patience, patience_for
from sagakit.engine.breakers import load as load_breakers
from sagakit.engine.breakers import save as save_breakers
from sagakit.engine.fused.queue import Batch
from sagakit.engine.fused.queue import Start as StartItem
from sagakit.engine.locks import release_saga
from sagakit.engine.orchestrator import Orchestrator
from sagakit.engine.participant import Participant
from sagakit.model.decision import Decision, merge_decisions
from sagakit.model.messages import RELEASE, Envelope, Outgoing, command_queue, new_id
from sagakit.model.state import SagaState
from sagakit.model.triggers import Reply, Start
from sagakit.observe.logs import get_logger
from sagakit.ports import Loaded, UnitOfWork

log = get_logger("sagakit.fused")

_RELEASE = f".{RELEASE}"


class TurnTimeout(BaseException):
    """A transaction waited longer than ``turn_wait`` for the runtime's turn: it rolls
    back, releasing its locks, and runs again. A BaseException, so no handler's
    catch-all takes it for the step's own failure."""


class Turn:
    """One transaction's hold on the engine's turn for rows other sagas share."""

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
            raise TurnTimeout(f"waited {self._wait:g}s for the turn") from None
        self.held = True

    def give(self) -> None:
        if self.held:
            self.held = False
            self._lock.release()


class Transactions:
    """How a fused engine runs a batch in one transaction. It holds what the engine's
    transactions share: the orchestrator, the participants by queue, the sagas' cached
    states, the turn, and the sagas whose writes go one by one."""

    def __init__(
        self,
        orchestrator: Orchestrator,
        participants: Mapping[str, Participant],
        *,
        turn_wait: float,
    ) -> None:
        self.orchestrator = orchestrator
        self.store = orchestrator.store
        self.by_queue = {command_queue(name): p for name, p in participants.items()}
        self.turn_wait = turn_wait
        self.turn = asyncio.Lock()
        #: Saga states between steps (only those with a step queued here).
        self.states: dict[str, SagaState] = {}
        #: Sagas whose writes go one by one (Unbatch).
        self.unbatched: set[str] = set()
        #: Command ids run from memory: no outbox row holds them.
        self.unwritten: set[str] = set()
        self._breakers_loaded: set[str] = set()

    def runs_here(self, out: Outgoing) -> bool:
        """A step's command for one of our participants: run from memory (a release of
        locks, which has no step, goes through the outbox: a saga that has ended is
        not read again to find it)."""
        return out.destination in self.by_queue and out.envelope.step is not None

    def take_local(self, decision: Decision) -> list[Outgoing]:
        """Take the commands that run here out of ``decision`` (one pass); return them."""
        mine: list[Outgoing] = []
        rest: list[Outgoing] = []
        for out in decision.commands:
            (mine if self.runs_here(out) else rest).append(out)
        if mine:
            decision.commands = rest
        return mine

    async def run(self, batch: Batch) -> tuple[list[Decision], dict[str, list[Outgoing]]]:
        """Run ``batch`` in one transaction; return its decisions and, apart from them,
        the commands they chain to our own participants (run from memory, no outbox).

        Rows other sagas share (business rows, semantic locks, breakers) are written by
        one transaction at a time: a transaction takes the engine's turn before its
        first statement that may lock one (a handler's first statement, the held writes
        or a release of locks) and keeps it until just before COMMIT, which waits for
        nothing. So no transaction of this engine ever waits for the turn while
        holding such a row, and the database sees every other wait: the turn and the
        database's locks never make a cycle it cannot see. Everything before (claims,
        decisions, the append of a batch whose handlers only held writes) overlaps
        freely. A wait for the turn is bounded all the same (``turn_wait``): a cycle
        through another process's transactions is broken by rolling back."""
        turn = Turn(self.turn, self.turn_wait)
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
                    unit,
                    unbatched=self.unbatched,
                    translate=self.store.translate,
                    before_use=turn.take,
                )
                if len(commands) > 1:
                    await inbox.preclaim_commands([(self._of(e).consumer, e) for e in commands])
                batch_patience.set(patience_for(commands))
                outcomes = [await self._execute(inbox, env) for env in commands]
                await self._decide_outcomes(unit, outcomes, decisions)
                inbox.check_used()
                for decision in decisions.values():
                    mine = self.take_local(decision)
                    if mine:
                        onward[decision.state.saga_id] = mine
                # The commands this batch ran from the outbox leave it with its append.
                sent = [e.message_id for e in batch.commands if e.message_id not in self.unwritten]
                replies = inbox.take_replies()  # stored by the append's statement
                await unit.append(list(decisions.values()), sent=sent, replies=replies)
                await turn.take()
                await inbox.flush_writes()
                for participant in self.by_queue.values():
                    await save_breakers(unit.records.breakers, list(participant.breakers.values()))
                # The turn passes on before the COMMIT, which takes no lock: the next
                # transaction's writes wait in the database, for this commit, only
                # where they touch the same rows.
                turn.give()
        finally:
            turn.give()
        return list(decisions.values()), onward

    def _of(self, env: Envelope) -> Participant:
        return self.by_queue[command_queue(env.type.split(".", 1)[0])]

    async def _release(self, unit: UnitOfWork, releases: Sequence[Envelope]) -> None:
        """A finished saga's semantic locks, freed at each participant that held one (what
        Participant.handle does with the same command)."""
        for env in releases:
            await release_saga(unit.records.locks, env.saga_id, self._of(env).name)

    async def _load_breakers(self, unit: UnitOfWork, commands: Sequence[Envelope]) -> None:
        """Each participant's circuit breakers as a previous process left them, once."""
        for env in commands:
            participant = self._of(env)
            if participant.name in self._breakers_loaded or not participant.breakers:
                continue
            await load_breakers(unit.records.breakers, list(participant.breakers.values()))
            self._breakers_loaded.add(participant.name)

    async def _decide_starts(
        self, unit: UnitOfWork, starts: Sequence[StartItem], decisions: dict[str, Decision]
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
        now = await self.orchestrator.now_in(unit)
        chained: list[Envelope] = []
        for item in starts:
            if item.saga_id in existing.states or item.saga_id in existing.broken:
                continue  # already started: starting is idempotent
            if item.saga_id in decisions:
                continue
            definition = self.orchestrator.definition(item.definition, item.version)
            trigger = Start(item.saga_id, dict(item.data), item.key, item.traceparent)
            decision = await self.orchestrator.decide_in(
                unit, definition, None, trigger, now=now, traceparent=item.traceparent
            )
            chained.extend(c.envelope for c in self.take_local(decision))
            decisions[item.saga_id] = decision
        return chained

    async def _execute(self, inbox: BatchInbox, env: Envelope) -> tuple[Envelope, Reply]:
        participant = self._of(env)
        inbox.begin(env)
        try:
            handler = participant.handler(env.type.split(".", 1)[1])
            body = await participant.execute(inbox.unit, env, handler)
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
        cached = {sid: self.states[sid] for sid in ids if sid in self.states}
        wanted = ids - cached.keys()
        loaded = await unit.load(sorted(wanted)) if wanted else Loaded()
        now = await self.orchestrator.now_in(unit)
        for env, reply in outcomes:
            prior = decisions.get(env.saga_id)
            state = (
                prior.state
                if prior is not None
                else cached.get(env.saga_id) or loaded.states.get(env.saga_id)
            )
            if state is None:
                log.error("a command for a saga that is not in the store", saga_id=env.saga_id)
                continue
            definition = self.orchestrator.definition(state.definition, state.definition_version)
            decision = await self.orchestrator.decide_in(
                unit, definition, state, reply, now=now, traceparent=env.traceparent
            )
            decisions[env.saga_id] = merge_decisions(prior, decision)
