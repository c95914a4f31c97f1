"""The real orchestrator under random replies, duplicates, reorders, drops and timeouts.

A hypothesis state machine plays every participant and the network between them and
one :class:`Orchestrator` on a SQLite store with a fake clock. Participants answer the
way :class:`sagakit.Participant` does: one inbox row per (saga, step, op), so a final
answer is repeated to every later attempt, a transient failure is forgotten, and a
compensation claims its action's row (the barrier). After every step each saga's log
must fold forward-only and its end must hold what the end promises; when the faults
stop, every saga must reach an end within a bounded number of rounds.
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Literal, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import note as hypothesis_note
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from sagakit.clock import FakeClock
from sagakit.engine.orchestrator import Orchestrator
from sagakit.model.definition import SagaDefinition, StepKind
from sagakit.model.events import SagaEvent, StepCompensated, StepFailed, StepSucceeded, decode
from sagakit.model.messages import Envelope, MessageKind, ReplyBody, TransportMessage
from sagakit.model.state import SagaState
from sagakit.model.status import SagaStatus, StepStatus
from sagakit.ports import Delivery
from sagakit.stores.sqlite import SqliteSagaStore
from sagakit.testing import check_log, forward_only
from tests.sagas import ORDER, TRIP

T = TypeVar("T")
Outcome = Literal["ok", "refused", "transient"]
Key = tuple[str, str, str]  # (saga, step, op): how a participant keys its inbox

MAX_SAGAS = 3
HEAL_ROUNDS = 100
MAX_TICKS_PER_INSTANT = 20

DEFINITIONS = st.sampled_from(["order", "trip"])
PICK = st.integers(min_value=0, max_value=63)  # index into a pool, modulo its size
# Mostly successes, so sagas get far enough for later steps to fail too.
OUTCOMES = st.sampled_from(["ok", "ok", "ok", "refused", "transient"])
# Retry backoffs are milliseconds to seconds, step timeouts 30 seconds.
JUMPS = st.one_of(
    st.sampled_from([0.05, 1.0, 10.0, 30.5, 61.0]), st.floats(min_value=0.0, max_value=45.0)
)

# What Participant stores for an action whose compensation arrived first.
PREVENTED = ReplyBody(ok=False, reason="prevented: compensated before it ran")


def note(text: str) -> None:
    """Tell hypothesis what happened, for the failing example it prints."""
    if currently_in_test_context():
        hypothesis_note(text)


def _sample(values: list[T], pick: int) -> T:
    return values[pick % len(values)]


def _describe(command: Envelope) -> str:
    return f"{command.saga_id} {command.step} {command.op} #{command.attempt}"


class ParticipantInboxes:
    """Every participant's inbox, with the rules of :meth:`Participant._run`."""

    def __init__(self) -> None:
        self.rows: dict[Key, ReplyBody] = {}

    def answer(self, command: Envelope, kind: StepKind, outcome: Outcome) -> ReplyBody:
        """Run ``command`` as a participant would; ``outcome`` is what its handler does."""
        key: Key = (command.saga_id, command.step or "", command.op or "action")
        stored = self.rows.get(key)
        if stored is not None:
            return stored.model_copy(update={"duplicate": True})
        if command.op == "compensation":
            return self._compensate(key, outcome)
        if kind is StepKind.RETRIABLE and outcome == "refused":
            # A retriable step must eventually succeed; a handler that refused it for
            # good would be answered from the inbox on every retry, forever.
            outcome = "transient"
        body = _handler(outcome, data={f"{command.step}_done": True})
        if not body.retryable:  # a transient failure did not happen; a retry runs again
            self.rows[key] = body
        return body

    def _compensate(self, key: Key, outcome: Outcome) -> ReplyBody:
        saga_id, step, _ = key
        action = self.rows.get((saga_id, step, "action"))
        if action is None:
            self.rows[(saga_id, step, "action")] = PREVENTED
            body = ReplyBody(ok=True, data={"null_compensation": True})
        elif not action.ok:
            body = ReplyBody(ok=True, data={"null_compensation": True})
        else:
            # A compensation the handler refuses is turned into a retryable failure.
            body = _handler(outcome, data={})
            if not body.ok:
                body = body.model_copy(update={"retryable": True})
        if body.ok:
            self.rows[key] = body
        return body

    def did(self, saga_id: str, step: str) -> bool:
        """The step's action took effect at its participant."""
        row = self.rows.get((saga_id, step, "action"))
        return row is not None and row.ok

    def undid(self, saga_id: str, step: str) -> bool:
        """The step's compensation ran its handler (undid a real effect)."""
        row = self.rows.get((saga_id, step, "compensation"))
        return row is not None and row.ok and not row.data.get("null_compensation")

    def compensated_anything(self, saga_id: str) -> bool:
        return any(s == saga_id and op == "compensation" for s, _, op in self.rows)


def _handler(outcome: Outcome, *, data: dict[str, Any]) -> ReplyBody:
    if outcome == "ok":
        return ReplyBody(ok=True, data=data)
    if outcome == "refused":
        return ReplyBody(ok=False, reason="refused")
    return ReplyBody(ok=False, reason="TransientError: try again", retryable=True)


class OrchestratorMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = tempfile.TemporaryDirectory(prefix="sagakit-stateful-")
        self.clock = FakeClock()
        self.store = SqliteSagaStore(Path(self.tmp.name) / "saga.db", clock=self.clock)
        self.orchestrator = Orchestrator(self.store, [ORDER, TRIP], clock=self.clock)
        self.run(self.store.migrate())
        self.participants = ParticipantInboxes()
        self.sagas: dict[str, SagaDefinition] = {}
        self.ended: dict[str, SagaStatus] = {}
        self.in_flight: list[Envelope] = []  # commands no participant has seen yet
        self.taken: list[Envelope] = []  # commands run at least once; may be redelivered
        self.held: list[Envelope] = []  # replies on their way, overtaken by later ones
        self.delivered: list[Envelope] = []  # replies the orchestrator has consumed
        self.reply_ids = itertools.count(1)
        self.failed = False

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        try:
            return self.loop.run_until_complete(work)
        except BaseException:
            self.failed = True
            raise

    # ------------------------------------------------------------------ rules

    @initialize(definition=DEFINITIONS)
    def first_saga(self, definition: str) -> None:
        self.run(self._start(definition))

    @precondition(lambda self: len(self.sagas) < MAX_SAGAS)
    @rule(definition=DEFINITIONS)
    def start_saga(self, definition: str) -> None:
        self.run(self._start(definition))

    @precondition(lambda self: self.in_flight)
    @rule(pick=PICK, outcome=OUTCOMES, hold=st.booleans())
    def answer(self, pick: int, outcome: Outcome, hold: bool) -> None:
        """A participant runs a command; its reply arrives now or is held back."""
        command = self.in_flight.pop(pick % len(self.in_flight))
        self.taken.append(command)
        self.run(self._answer(command, outcome, hold=hold))

    @precondition(lambda self: self.taken)
    @rule(pick=PICK, what=st.sampled_from(["reply", "command"]), outcome=OUTCOMES)
    def duplicate(self, pick: int, what: str, outcome: Outcome) -> None:
        """A reply is delivered again (same message id), or the broker hands a participant
        a command it already ran (its ack was lost) and the participant answers anew."""
        if what == "reply" and self.delivered:
            self.run(self._deliver(_sample(self.delivered, pick), duplicate=True))
            return
        command = _sample(self.taken, pick)
        note(f"redelivered command {_describe(command)}")
        self.run(self._answer(command, outcome))

    @precondition(lambda self: self.held)
    @rule(pick=PICK)
    def deliver_held_reply(self, pick: int) -> None:
        """A reply held back arrives after replies sent later (reordered, maybe stale)."""
        self.run(self._deliver(self.held.pop(pick % len(self.held))))

    @precondition(lambda self: self.in_flight)
    @rule(pick=PICK)
    def drop_command(self, pick: int) -> None:
        command = self.in_flight.pop(pick % len(self.in_flight))
        note(f"dropped command {_describe(command)}")

    @rule(seconds=JUMPS)
    def advance_clock(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.run(self._tick())

    @rule()
    def fire_next_timer(self) -> None:
        """Jump to the earliest retry or deadline of any saga, as the timer loop would."""
        wake = self.run(self.store.next_wake(list(self.sagas)))
        if wake is not None:
            self.clock.advance(max(0.0, wake - self.clock.now()) + 0.001)
        self.run(self._tick())

    # ------------------------------------------------------------------ invariants

    @invariant()
    def every_log_is_forward_only_and_every_end_holds(self) -> None:
        self.run(self._check_all())

    def teardown(self) -> None:
        try:
            if not self.failed:  # a failed step's error must not be masked by another
                self.run(self._heal())
        finally:
            self.run(self.store.close())
            self.loop.close()
            self.tmp.cleanup()

    # ------------------------------------------------------------------ the network

    async def _start(self, name: str) -> None:
        saga_id = f"saga-{len(self.sagas) + 1}"
        self.sagas[saga_id] = self.orchestrator.definition(name)
        await self.orchestrator.start(name, {"amount": 10}, saga_id=saga_id)
        note(f"started {saga_id} ({name})")
        await self._collect()

    async def _collect(self) -> None:
        """Move what the orchestrator committed to its outbox onto the wire."""
        while True:
            async with self.store.claim_outbox(limit=100) as claim:
                for row in claim.rows:
                    command = Envelope.from_bytes(row.message.body)
                    assert command.kind is MessageKind.COMMAND, command
                    self.in_flight.append(command)
                claim.mark_sent([row.id for row in claim.rows])
            if len(claim.rows) < 100:
                return

    async def _answer(self, command: Envelope, outcome: Outcome, *, hold: bool = False) -> None:
        """The command's participant runs it; its reply arrives now or is held back."""
        reply = self._participant_runs(command, outcome)
        if hold:
            note(f"held: reply to {_describe(command)}")
            self.held.append(reply)
        else:
            await self._deliver(reply)

    def _participant_runs(self, command: Envelope, outcome: Outcome) -> Envelope:
        step = self.sagas[command.saga_id].step(command.step or "")
        name = step.command if command.op == "action" else step.compensation
        assert command.type == f"{step.participant}.{name}", command
        body = self.participants.answer(command, step.kind, outcome)
        note(f"{_describe(command)} -> {_summary(body)}")
        return Envelope(
            message_id=f"reply-{next(self.reply_ids)}",
            type=f"{command.type}.reply",
            kind=MessageKind.REPLY,
            saga_id=command.saga_id,
            causation_id=command.message_id,
            created_at=self.clock.now(),
            traceparent=command.traceparent,
            step=command.step,
            op=command.op,
            attempt=command.attempt,
            payload=body.model_dump(),
        )

    async def _deliver(self, reply: Envelope, *, duplicate: bool = False) -> None:
        wire = TransportMessage(self.orchestrator.reply_queue, reply.message_id, reply.to_bytes())
        delivery = Delivery(wire, attempt=2 if duplicate else 1)
        await self.orchestrator.handle([delivery])
        assert delivery.rejection is None, delivery.rejection
        if not duplicate:
            self.delivered.append(reply)
        await self._collect()

    async def _tick(self) -> None:
        for _ in range(MAX_TICKS_PER_INSTANT):
            if not await self.orchestrator.tick():
                break
        else:
            raise AssertionError("sagas keep waking at one instant without settling")
        await self._collect()

    # ------------------------------------------------------------------ checks

    async def _check_all(self) -> None:
        statuses = await self.store.statuses(list(self.sagas))
        for saga_id, definition in self.sagas.items():
            history = await self.store.history(saga_id)
            assert forward_only(saga_id, history) == []
            state = check_log(saga_id, history)
            assert statuses[saga_id] == state.status.value, "projection disagrees with log"
            was = self.ended.get(saga_id)
            if was is not None:
                assert state.status is was, f"{saga_id} ended {was}, is now {state.status}"
            elif state.status.terminal:
                self.ended[saga_id] = state.status
                note(f"{saga_id} ended {state.status}: {state.reason}")
            events = [decode(e) for e in history]
            if state.status is SagaStatus.COMPLETED:
                self._check_completed(definition, state, events)
            elif state.status is SagaStatus.COMPENSATED:
                self._check_compensated(definition, state, events)

    def _check_completed(
        self, definition: SagaDefinition, state: SagaState, events: list[SagaEvent]
    ) -> None:
        saga_id = state.saga_id
        for step in definition.steps:
            assert state.steps[step.name].status is StepStatus.SUCCEEDED, (saga_id, step.name)
            assert self.participants.did(saga_id, step.name), f"{step.name} never took effect"
        for at, event in enumerate(events):
            if isinstance(event, StepFailed) and not event.retryable:
                assert any(
                    isinstance(later, StepSucceeded) and later.step == event.step
                    for later in events[at + 1 :]
                ), f"{saga_id} completed though {event.step} failed for good"
        assert not self.participants.compensated_anything(saga_id), (
            f"{saga_id} completed, yet a compensation reached a participant"
        )

    def _check_compensated(
        self, definition: SagaDefinition, state: SagaState, events: list[SagaEvent]
    ) -> None:
        saga_id = state.saga_id
        undone = {e.step for e in events if isinstance(e, StepCompensated)}
        for step in definition.steps:
            # Every compensatable step ever requested, unless its answer was a refusal.
            owed = state.steps.get(step.name)
            if (
                step.kind is StepKind.COMPENSATABLE
                and owed is not None
                and owed.attempt > 0
                and not owed.final_failure
            ):
                assert owed.status is StepStatus.COMPENSATED, (saga_id, step.name, owed)
                assert step.name in undone, (saga_id, step.name)
            if self.participants.did(saga_id, step.name):
                # Everything undone: no effect may outlive the saga at any participant.
                assert step.kind is StepKind.COMPENSATABLE, (
                    f"{saga_id} is compensated, but its {step.kind} step {step.name} "
                    "took effect at its participant"
                )
                assert self.participants.undid(saga_id, step.name), (
                    f"{saga_id} is compensated, but {step.name} was never undone"
                )

    # ------------------------------------------------------------------ the end

    async def _heal(self) -> None:
        """Stop the faults: deliver everything, answer everything, let timers fire."""
        for _ in range(HEAL_ROUNDS):
            statuses = await self.store.statuses(list(self.sagas))
            pending = [sid for sid in self.sagas if not SagaStatus(statuses[sid]).terminal]
            if not pending:
                return
            if self.held or self.in_flight:
                while self.held:
                    await self._deliver(self.held.pop(0))
                while self.in_flight:
                    command = self.in_flight.pop(0)
                    self.taken.append(command)
                    await self._answer(command, "ok")
            else:
                wake = await self.store.next_wake(pending)
                assert wake is not None, f"{pending} still running with nothing due or in flight"
                self.clock.advance(max(0.0, wake - self.clock.now()) + 0.001)
                await self._tick()
            await self._check_all()
        raise AssertionError(f"not terminal {HEAL_ROUNDS} rounds after the faults stopped")


def _summary(body: ReplyBody) -> str:
    if body.ok:
        text = "ok (nothing to undo)" if body.data.get("null_compensation") else "ok"
    else:
        text = f"{'transient' if body.retryable else 'refused'}: {body.reason}"
    return text + (" [from inbox]" if body.duplicate else "")


# Shrinking a failure to its shortest story replays hundreds of runs and can take a few
# minutes; let it finish rather than cut it off with the default timeout.
pytestmark = pytest.mark.timeout(600)

OrchestratorMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestOrchestratorStateful = OrchestratorMachine.TestCase


# Replays of what the machine found, step by step, so they fail every time rather than
# whenever the search happens upon them.


def _pick(machine: OrchestratorMachine, step: str, op: str = "action", attempt: int = 1) -> int:
    for index, command in enumerate(machine.in_flight):
        if (command.step, command.op, command.attempt) == (step, op, attempt):
            return index
    raise LookupError(f"no {step} {op} #{attempt} in flight")


def _replay(steps: Callable[[OrchestratorMachine], None]) -> None:
    machine = OrchestratorMachine()
    try:
        steps(machine)
        machine.every_log_is_forward_only_and_every_end_holds()
        machine.run(machine._heal())  # then answer everything: checks every round, and the end
    except BaseException:
        machine.failed = True
        raise
    finally:
        machine.teardown()


def test_parallel_siblings_timing_out_for_good_at_one_instant() -> None:
    def steps(m: OrchestratorMachine) -> None:
        m.first_saga("trip")
        m.answer(pick=_pick(m, "flight"), outcome="ok", hold=False)
        for _ in range(5):  # hotel and car time out together, are retried, and again
            m.fire_next_timer()

    _replay(steps)


def test_a_pivot_attempt_that_commits_late_is_not_compensated_over() -> None:
    def steps(m: OrchestratorMachine) -> None:
        m.first_saga("order")
        m.answer(pick=_pick(m, "reserve"), outcome="ok", hold=False)
        m.answer(pick=_pick(m, "charge"), outcome="ok", hold=False)
        m.fire_next_timer()  # ship #1 times out; its command is still on its way
        m.fire_next_timer()  # ship #2
        m.answer(pick=_pick(m, "ship", attempt=2), outcome="transient", hold=False)
        m.fire_next_timer()  # ship #3
        m.answer(pick=_pick(m, "ship", attempt=3), outcome="transient", hold=False)
        # The saga gives up on ship and compensates; then the first attempt arrives and ships.
        m.answer(pick=_pick(m, "ship", attempt=1), outcome="ok", hold=False)

    _replay(steps)
