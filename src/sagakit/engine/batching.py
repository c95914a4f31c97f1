"""Many saga commands in one transaction: their inbox work in bulk, their writes grouped.

A participant that runs a batch of commands in one transaction (Participant.handle, and
the fused runtime's steps) would otherwise pay two round trips per command for its inbox
alone: the claim of the command's key and the write of its stored reply. Here every
key is claimed up front, one INSERT per consumer, and the replies are written in one
statement before the transaction goes on: two round trips per batch.

The participant's own code does not change: it runs against :class:`InboxView`, a unit
that answers its claims from the bulk claim and keeps its replies for the bulk write.
Its connection is a :class:`~sagakit.engine.held_writes.WatchedConnection`: a savepoint
per step only where the step touches the connection, and the writes handlers leave for
later sent grouped, in :func:`~sagakit.engine.write_order.write_order`. How long a
batch waits for one handler is :func:`~sagakit.engine.handler_call.patience_for`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from typing import Any, cast

from sagakit.engine.handler_call import (
    MAX_PATIENCE,
    PATIENCE_SHARE,
    HandlerTimedOut,
    HandlerTooSlow,
    batch_patience,
    patience_for,
    step_key,
)
from sagakit.engine.held_writes import Hook, Opener, Unbatch, WatchedConnection
from sagakit.engine.write_order import row_identity, write_order
from sagakit.model.messages import Envelope
from sagakit.ports import Records, UnitOfWork


class BatchInbox:
    """The batch's unit as participants see it, with their inbox work done in bulk.

    Every command's inbox key is claimed up front, one INSERT per participant, and the
    replies they store are written in one statement before the batch goes on: two round
    trips per batch instead of two per command. Each participant still asks for its key
    as usual and gets the answer the bulk claim found; anything else (a compensation
    claiming its action's key, reading stored replies, forgetting a key) goes to the
    store as it is, after the pending replies are written.

    Sagas in ``unbatched`` send their writes one by one. ``before_use`` is awaited once,
    before the first statement the handlers send (the fused runtime takes its turn for
    rows other sagas share there).
    """

    def __init__(
        self,
        unit: UnitOfWork,
        *,
        unbatched: Collection[str] = (),
        translate: Callable[[Any], Exception] = lambda exc: exc,
        before_use: Hook | None = None,
        solo: bool = False,
    ) -> None:
        self._unit = unit
        self.translate = translate
        self._claimed: dict[tuple[str, str], bool] = {}
        self._pending: list[tuple[str, str, str]] = []
        self._pending_keys: set[tuple[str, str]] = set()  # (consumer, key) of _pending
        self._fetched: dict[tuple[str, str], str | None] = {}
        self.unbatched = unbatched
        self._view = InboxView(self, unit, before_use, solo=solo)
        self.unit = cast(UnitOfWork, self._view)

    def begin(self, env: Envelope) -> None:
        """The participant is about to run ``env``: its savepoint and writes are its."""
        self._view.step = step_key(env)

    async def preclaim_commands(self, commands: Sequence[tuple[str, Envelope]]) -> None:
        """Claim every ``(consumer, command)``'s inbox key in bulk, and for each
        compensation whose key was fresh, its action's key too (and the action's stored
        reply where the action had run): what Participant.execute asks for, all at once
        (UnitOfWork.claim_commands: one statement on PostgreSQL)."""
        pairs = [(consumer, inbox_key(env, env.op)) for consumer, env in commands]
        own = set(pairs)
        actions: dict[tuple[str, str], tuple[str, str]] = {}
        for (consumer, env), pair in zip(commands, pairs, strict=True):
            action = (consumer, inbox_key(env, "action"))
            # An action of this batch holds that key: whichever of the two runs first
            # takes the claim, and the other finds it taken, as one by one.
            if env.op == "compensation" and action not in own:
                actions[pair] = action
        fresh, stored = await self._unit.claim_commands(pairs, actions)
        for pair in pairs:
            self._claimed[pair] = pair in fresh
        for pair, action in actions.items():
            if pair in fresh:
                self._claimed[action] = action in fresh
                if action in stored:
                    # An action whose transaction committed while the claim waited for
                    # it is in neither: its reply is read when the compensation asks.
                    self._fetched[action] = stored[action]

    async def flush_writes(self) -> None:
        await self._view.connection.flush()

    async def preclaim(self, consumer: str, keys: Sequence[str]) -> None:
        fresh = await self._unit.claim(consumer, keys)
        for key in keys:
            self._claimed[(consumer, key)] = key in fresh

    async def replies(self, consumer: str, keys: Sequence[str]) -> dict[str, str | None]:
        wanted = [(consumer, key) for key in keys]
        if all(w in self._fetched and w not in self._pending_keys for w in wanted):
            return {key: self._fetched.pop((consumer, key)) for key in keys}
        await self.flush()
        return await self._unit.replies(consumer, keys)

    async def claim(self, consumer: str, keys: Sequence[str]) -> set[str]:
        if len(keys) == 1 and (consumer, keys[0]) in self._claimed:
            return {keys[0]} if self._claimed.pop((consumer, keys[0])) else set()
        await self.flush()
        return await self._unit.claim(consumer, keys)

    async def set_reply(self, consumer: str, key: str, reply: str) -> None:
        self._pending.append((consumer, key, reply))
        self._pending_keys.add((consumer, key))

    def take_replies(self) -> list[tuple[str, str, str]]:
        """The replies still waiting to be stored, for a statement that stores them."""
        pending, self._pending = self._pending, []
        self._pending_keys.clear()
        return pending

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        self._pending_keys.clear()
        if len(pending) == 1:
            await self._unit.set_reply(*pending[0])
        elif pending:
            await self._unit.set_replies(pending)

    def check_used(self) -> None:
        """Every key claimed up front must have been asked for: if not, the participant's
        key format changed and the claims would be wrong, so the batch must not commit."""
        if self._claimed:
            unused = ", ".join(key for _, key in list(self._claimed)[:3])
            raise RuntimeError(f"inbox keys claimed for participants that never asked: {unused}")


class InboxView:
    """What a participant gets as its unit inside a batch (see BatchInbox): a savepoint
    per step only where the step touches the connection."""

    def __init__(
        self, inbox: BatchInbox, unit: UnitOfWork, before_use: Hook | None, *, solo: bool
    ) -> None:
        self._inbox = inbox
        self._unit = unit
        self._watched = WatchedConnection(
            unit.connection, inbox.translate, unit.write_many, before_use=before_use, solo=solo
        )
        self.step = ""  # the step running now (step_key)

    @property
    def undone(self) -> str | None:
        """The step that failed after writing with no savepoint of its own (a lone
        command's): only rolling the whole transaction back undoes it."""
        return self._watched.undone

    def __getattr__(self, name: str) -> Any:
        return getattr(self._unit, name)

    @property
    def connection(self) -> WatchedConnection:
        return self._watched

    @property
    def records(self) -> Records:
        """The smaller tables, through the watched connection: a handler's lock is taken
        in its savepoint, and after the turn where the batch has one."""
        return self._unit.records_on(self._watched)

    @contextlib.asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        async with self._watched.savepoint_on_use(self.step, self._unit.savepoint):
            yield

    async def write_later(self, saga_id: str, statement: Any, params: dict[str, Any]) -> None:
        """StepContext.write inside a batch: held for a grouped send, unless the step has
        opened its savepoint already or this saga's writes must go one by one."""
        if saga_id in self._inbox.unbatched or self._watched.in_savepoint(self.step):
            await self._watched.execute(statement, params)
        else:
            self._watched.hold(self.step, saga_id, statement, params)

    async def claim(self, consumer: str, keys: Sequence[str]) -> set[str]:
        return await self._inbox.claim(consumer, keys)

    async def set_reply(self, consumer: str, key: str, reply: str) -> None:
        await self._inbox.set_reply(consumer, key, reply)

    async def replies(self, consumer: str, keys: Sequence[str]) -> dict[str, str | None]:
        return await self._inbox.replies(consumer, keys)

    async def forget(self, consumer: str, key: str) -> None:
        await self._inbox.flush()
        await self._unit.forget(consumer, key)


def inbox_key(env: Envelope, op: str | None) -> str:
    # The participant's inbox key for a saga command: one per saga, step and direction.
    return f"{env.saga_id}/{env.step}/{op}"


# The batch's parts that are concepts of their own live in modules of their own (the
# handler's time, the held writes, their order); their names stay importable from here.
__all__ = [
    "MAX_PATIENCE",
    "PATIENCE_SHARE",
    "BatchInbox",
    "HandlerTimedOut",
    "HandlerTooSlow",
    "Hook",
    "InboxView",
    "Opener",
    "Unbatch",
    "WatchedConnection",
    "batch_patience",
    "inbox_key",
    "patience_for",
    "row_identity",
    "step_key",
    "write_order",
]
