"""A participant's batches of commands: each in one transaction, run again until it commits.

One transaction holds, together, a batch's inbox claims (in bulk, see
:class:`~sagakit.engine.batching.BatchInbox`), its handlers' writes, its replies in the
outbox and the lock releases of sagas that finished. A round that a grouped write, a
handler past its timeout or a handler too slow for its batch cut short rolls back and runs
again without that cause; a command too slow for its batch runs afterwards alone, in a
transaction of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from sagakit.engine.batching import BatchInbox
from sagakit.engine.breakers import load as load_breakers
from sagakit.engine.breakers import save as save_breakers
from sagakit.engine.handler_call import (
    HandlerTimedOut,
    HandlerTooSlow,
    StepUndone,
    batch_patience,
    patience_for,
    step_key,
)
from sagakit.engine.held_writes import Unbatch
from sagakit.engine.locks import release_saga
from sagakit.engine.step_context import Handler
from sagakit.model.messages import Envelope, MessageKind, Outgoing, ReplyBody, new_id
from sagakit.ports import Delivery, UnitOfWork

if TYPE_CHECKING:
    from sagakit.engine.participant import Participant

#: A command and the handler it runs.
Command = tuple[Envelope, Handler]


class CommandBatches:
    """Runs a participant's commands, one batch to a transaction."""

    def __init__(self, participant: Participant) -> None:
        self._participant = participant
        self._lone_slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        self._breakers_loaded = not participant.breakers

    async def run(
        self,
        commands: Sequence[Command],
        releases: Sequence[str],
        carried: Mapping[str, Delivery],
    ) -> None:
        """Run ``commands`` and release the locks of the sagas in ``releases``, in one
        transaction; ``carried`` is each command's delivery, by message id."""
        alone = await self._until_committed(commands, releases)
        if not alone:
            return
        # The batch committed without its slow commands: what it did is done now (the
        # transport need not hold it back), and those run each in a transaction of its
        # own, side by side.
        slow = {env.message_id for env, _ in alone}
        for message_id, delivery in carried.items():
            if message_id not in slow:
                delivery.done()
        await asyncio.gather(*(self._alone(command) for command in alone))

    async def _alone(self, command: Command) -> None:
        """A command too slow for its batch, in a transaction of its own (no more of
        those at once than the participant has batches)."""
        loop = asyncio.get_running_loop()
        if self._lone_slots is None or self._lone_slots[0] is not loop:
            self._lone_slots = (loop, asyncio.Semaphore(self._participant.concurrency))
        async with self._lone_slots[1]:
            await self._until_committed([command], [])

    async def _until_committed(
        self, commands: Sequence[Command], releases: Sequence[str]
    ) -> list[Command]:
        """Run ``commands`` in one transaction, again and again until it commits; return
        the commands that left it for being too slow."""
        unbatched: set[str] = set()
        alone: list[Command] = []
        batch = list(commands)
        while batch or releases:  # each round settles one more saga's writes, timeout or slowness
            batch_patience.set(patience_for([env for env, _ in batch]))
            try:
                await self._once(batch, releases, unbatched)
                return alone
            except Unbatch as unbatch:
                unbatched.update(unbatch.saga_ids)
            except StepUndone:
                pass  # the next run answers that step with its outcome, unrun
            except HandlerTimedOut as late:
                self._participant.note_timeout(late)
            except HandlerTooSlow as slow:
                alone.extend(c for c in batch if step_key(c[0]) == slow.step)
                batch = [c for c in batch if step_key(c[0]) != slow.step]
        return alone

    async def _once(
        self, commands: Sequence[Command], releases: Sequence[str], unbatched: set[str]
    ) -> None:
        participant = self._participant
        async with participant.store.unit() as unit:
            if not self._breakers_loaded:
                await load_breakers(unit.records.breakers, list(participant.breakers.values()))
                self._breakers_loaded = True
            for saga_id in releases:
                released = await release_saga(unit.records.locks, saga_id, participant.name)
                participant.log.info(
                    f"released {released} lock(s) of a finished saga", saga_id=saga_id
                )
            inbox = BatchInbox(
                unit,
                unbatched=unbatched,
                translate=participant.store.translate,
                # A lone command needs no savepoint: if it fails after writing, the
                # whole transaction is its own to roll back (StepUndone).
                solo=len(commands) == 1,
            )
            if commands:  # one statement for the keys, even one compensation's three
                await participant._preclaim(inbox, [env for env, _ in commands])
            replies = []
            for env, handler in commands:
                inbox.begin(env)
                replies.append(await self._run(inbox.unit, env, handler))
            await inbox.flush_writes()
            inbox.check_used()
            await unit.enqueue(replies, replies=inbox.take_replies())
            await save_breakers(unit.records.breakers, list(participant.breakers.values()))

    async def _run(self, unit: UnitOfWork, env: Envelope, handler: Handler) -> Outgoing:
        participant = self._participant
        with participant.step_span(env) as hop:
            body = await participant.execute(unit, env, handler)
            return _reply(env, body, created_at=participant.clock.now(), traceparent=hop)


def _reply(
    command: Envelope, body: ReplyBody, *, created_at: float, traceparent: str | None
) -> Outgoing:
    """The reply to ``command`` that carries its outcome back to the orchestrator."""
    envelope = Envelope(
        message_id=new_id(),
        type=f"{command.type}.reply",
        kind=MessageKind.REPLY,
        saga_id=command.saga_id,
        causation_id=command.message_id,
        created_at=created_at,
        traceparent=traceparent or command.traceparent,
        step=command.step,
        op=command.op,
        attempt=command.attempt,
        payload=body.model_dump(),
    )
    return Outgoing(command.reply_to or "", envelope)
