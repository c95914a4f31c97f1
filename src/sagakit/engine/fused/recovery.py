"""What a fused engine finds in the store rather than in its memory: the commands for its
participants that wait in the outbox (a timer's retry, a lock release, another process's
write), what waits there for the orchestrator, and, as it starts, every step an earlier
process was running from memory when it stopped (an unanswered request in a saga's log)."""

from __future__ import annotations

from collections.abc import Mapping

from sagakit.engine.fused.queue import StepQueue
from sagakit.engine.fused.transaction import Transactions
from sagakit.engine.orchestrator import Orchestrator
from sagakit.engine.participant import Participant
from sagakit.model.decide import outstanding
from sagakit.model.definition import StepKind
from sagakit.model.messages import Envelope, TransportMessage
from sagakit.observe.logs import get_logger
from sagakit.ports import Delivery

log = get_logger("sagakit.fused")

_RECOVER_CHUNK = 500  # sagas read at once when an engine starts (recover)


class Recovery:
    """Queues the engine's work found in the store. Every command the engine queues goes
    through :meth:`queue` and, once run, :meth:`ran`, so a sweep never queues a command
    that is queued, running, or was run since the sweep began."""

    def __init__(
        self,
        orchestrator: Orchestrator,
        participants: Mapping[str, Participant],
        queue: StepQueue,
        transactions: Transactions,
    ) -> None:
        self.orchestrator = orchestrator
        self.store = orchestrator.store
        self.participants = participants
        self.queue = queue
        self.transactions = transactions
        self._known: set[str] = set()  # command ids queued or running here
        self._recent: set[str] = set()  # command ids run since the last sweep began

    def queue_command(self, env: Envelope, *, unwritten: bool) -> None:
        """Queue a command to run here; ``unwritten``: it has no outbox row."""
        self._known.add(env.message_id)
        if unwritten:
            self.transactions.unwritten.add(env.message_id)
        self.queue.put_command(env)

    def ran(self, message_id: str) -> None:
        """A queued command ran, and its transaction committed."""
        self._known.discard(message_id)
        self._recent.add(message_id)

    async def sweep(self) -> None:
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
            self.queue_command(Envelope.from_bytes(row.message.body), unwritten=False)
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

    async def recover(self) -> None:
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
                        self.queue_command(out.envelope, unwritten=True)
                        found += 1
        if found:
            log.info(f"fused runtime: {found} unanswered step(s) found in the log, running them")
