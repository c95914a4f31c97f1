"""Many saga commands in one transaction: their inbox work in bulk, their writes grouped.

A participant that runs a batch of commands in one transaction (Participant.handle, and
the fused runtime's steps) would otherwise pay two round trips per command for its inbox
alone: the claim of the command's key and the write of its stored reply. Here every
key is claimed up front, one INSERT per consumer, and the replies are written in one
statement before the transaction goes on: two round trips per batch.

The participant's own code does not change: it runs against :class:`InboxView`, a unit
that answers its claims from the bulk claim and keeps its replies for the bulk write.

Each step's handler gets a savepoint only if it touches the connection (opened at its
first statement, after the earlier steps' held writes went out), so a step that fails
undoes its own writes and nobody else's. Writes handed to ``StepContext.write`` wait and
go out grouped, in an order that depends only on the rows they touch (see
:func:`write_order`), so two transactions that write the same rows lock them in the same
order.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from decimal import Decimal
from functools import lru_cache
from typing import Any, cast

from sqlalchemy.exc import DBAPIError

from sagakit.errors import StoreError
from sagakit.model.messages import Envelope
from sagakit.ports import Records, UnitOfWork

#: Opens a savepoint (UnitOfWork.savepoint).
Opener = Callable[[], contextlib.AbstractAsyncContextManager[None]]
#: Awaited once, before the first statement the handlers' connection sends.
Hook = Callable[[], Awaitable[None]]


class Unbatch(BaseException):
    """A group of batched writes failed: the batch must roll back and run again with
    these sagas' writes sent one at a time, so the failure reaches its own step.

    A BaseException so that it passes through the participant's catch-all, which would
    otherwise turn it into some other step's failure and let the batch commit.
    """

    def __init__(self, saga_ids: set[str], cause: BaseException) -> None:
        super().__init__(f"a batched write failed: {cause}")
        self.saga_ids = saga_ids


class HandlerTimedOut(BaseException):
    """A handler ran past its step's timeout and was cancelled. Its statement may have
    been cut off mid-flight, so the connection is not trusted: the whole transaction
    rolls back and runs again, with that step answered as a failed attempt unrun."""

    def __init__(self, step: str, seconds: float) -> None:
        super().__init__(f"{step} ran past its timeout of {seconds:g}s")
        self.step = step
        self.seconds = seconds


class HandlerTooSlow(BaseException):
    """A handler kept its batch waiting longer than the batch's patience: it is cut
    short, the batch rolls back and runs again without it, and it runs alone, in a
    transaction of its own with its whole budget, so one slow call never holds the
    other commands it happened to share a batch with."""

    def __init__(self, step: str) -> None:
        super().__init__(f"{step} kept its batch waiting")
        self.step = step


#: How long the running batch waits for any one of its handlers before that handler
#: leaves the batch (HandlerTooSlow); None for a command that runs alone.
batch_patience: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "sagakit_batch_patience", default=None
)

#: A batch waits for one handler for at most this long ...
MAX_PATIENCE = 1.0
#: ... and for no longer than this share of the shortest timeout among its commands.
PATIENCE_SHARE = 0.2


def patience_for(commands: Sequence[Envelope]) -> float | None:
    """How long a batch of ``commands`` waits for one handler (None: a lone command,
    which gets its whole budget)."""
    if len(commands) < 2:
        return None
    budgets = [env.timeout for env in commands if env.timeout]
    shortest = min(budgets, default=MAX_PATIENCE / PATIENCE_SHARE)
    return min(MAX_PATIENCE, shortest * PATIENCE_SHARE)


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
    ) -> None:
        self._unit = unit
        self.translate = translate
        self._claimed: dict[tuple[str, str], bool] = {}
        self._pending: list[tuple[str, str, str]] = []
        self._pending_keys: set[tuple[str, str]] = set()  # (consumer, key) of _pending
        self._fetched: dict[tuple[str, str], str | None] = {}
        self.unbatched = unbatched
        self._view = InboxView(self, unit, before_use)
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

    def __init__(self, inbox: BatchInbox, unit: UnitOfWork, before_use: Hook | None) -> None:
        self._inbox = inbox
        self._unit = unit
        self._watched = WatchedConnection(
            unit.connection, inbox.translate, unit.write_many, before_use=before_use
        )
        self.step = ""  # the step running now (step_key)

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


class WatchedConnection:
    """The transaction's connection as handlers see it.

    Before a step's first statement it opens that step's savepoint (savepoint_on_use),
    after sending the writes other steps left waiting, so rolling the step back undoes
    its writes and only its writes. It holds the writes handlers leave for later
    (StepContext.write) until the next statement or the end of the handlers, then sends
    them grouped: the k-th held write of each saga in one round, the same statement
    within a round as one ``executemany``, in :func:`write_order`. Rounds keep each
    saga's writes in the order it made them.
    """

    def __init__(
        self,
        connection: Any,
        translate: Callable[[Any], Exception],
        many: Callable[[Any, Sequence[dict[str, Any]]], Awaitable[None]],
        *,
        before_use: Hook | None = None,
    ) -> None:
        self._connection = connection
        self._translate = translate
        self._many = many  # how a group of held writes goes out (UnitOfWork.write_many)
        self._before_use = before_use
        self._held: list[tuple[str, str, Any, dict[str, Any]]] = []
        # The step whose savepoint opens when it first touches the connection, how to
        # open one, and the one it opened (savepoint_on_use).
        self._lazy: tuple[str, Opener] | None = None
        self._opened: contextlib.AbstractAsyncContextManager[None] | None = None

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._connection, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute
        if self._before_use is None and not self._held and self._settled():
            return attribute

        async def when_ready(*args: Any, **kwargs: Any) -> Any:
            await self._ready()
            return await attribute(*args, **kwargs)

        return when_ready

    def _settled(self) -> bool:
        """No savepoint is waiting to open for the running step."""
        return self._lazy is None or self._opened is not None

    async def _ready(self) -> None:
        """What must happen before a handler's statement: the hook, the step's savepoint
        (after the other steps' held writes), and this step's own held writes."""
        await self._run_hook()
        if not self._settled():
            await self._open_savepoint()
        elif self._held:
            await self.flush()

    async def _run_hook(self) -> None:
        if self._before_use is not None:
            hook, self._before_use = self._before_use, None
            await hook()

    def in_savepoint(self, step: str) -> bool:
        """Whether ``step`` runs in a savepoint its first use of the connection opened."""
        return self._opened is not None and self._lazy is not None and self._lazy[0] == step

    @contextlib.asynccontextmanager
    async def savepoint_on_use(self, step: str, opener: Opener) -> AsyncIterator[None]:
        """Run ``step`` with a savepoint that opens only when it first touches the
        connection. A step that writes only through StepContext.write never does: its
        writes wait for the grouped send, and are dropped if it fails. One that does
        gets its savepoint just then, after the earlier steps' waiting writes went out
        and before its own, so rolling it back undoes its writes and only its writes."""
        self._lazy = (step, opener)
        try:
            yield
        except BaseException as exc:
            opened, self._lazy, self._opened = self._opened, None, None
            self.drop(step)
            if opened is not None:
                await opened.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        opened, self._lazy, self._opened = self._opened, None, None
        if opened is not None:
            await opened.__aexit__(None, None, None)

    async def _open_savepoint(self) -> None:
        assert self._lazy is not None
        step, opener = self._lazy
        mine = [held for held in self._held if held[0] == step]
        self._held = [held for held in self._held if held[0] != step]
        await self.flush()  # the other steps' writes: outside this step's savepoint
        opened = opener()
        await opened.__aenter__()
        self._opened = opened
        self._held = mine
        await self.flush()

    def hold(self, step: str, saga_id: str, statement: Any, params: dict[str, Any]) -> None:
        self._held.append((step, saga_id, statement, params))

    def drop(self, step: str) -> None:
        """Forget the held writes of a step whose handler failed."""
        if self._held:
            self._held = [held for held in self._held if held[0] != step]

    async def flush(self) -> None:
        if not self._held:
            return
        await self._run_hook()
        held, self._held = self._held, []
        rounds: dict[str, int] = {}
        groups: dict[tuple[int, str], tuple[Any, list[dict[str, Any]]]] = {}
        for _step, saga_id, statement, params in held:
            number = rounds[saga_id] = rounds.get(saga_id, -1) + 1
            key = (number, _sql_of(statement))
            groups.setdefault(key, (statement, []))[1].append(params)
        try:
            for key in sorted(groups):
                statement, rows = groups[key]
                await self._many(statement, write_order(key[1], rows))
        except (DBAPIError, StoreError) as exc:
            error = self._translate(exc) if isinstance(exc, DBAPIError) else exc
            if isinstance(error, StoreError) and error.retryable:
                raise error from exc  # a deadlock, a lost connection: not the writes' fault
            raise Unbatch({saga_id for _, saga_id, _, _ in held}, exc) from exc


def _sql_of(statement: Any) -> str:
    text = getattr(statement, "text", None)
    return text if isinstance(text, str) else str(statement)


_BIND = re.compile(r"(?<![:\w]):(\w+)")
_WHERE = re.compile(r"\bWHERE\b", re.IGNORECASE)
_UPSERT = re.compile(
    r"\bINSERT\s+INTO\s+[^(]+\(([^)]*)\)\s*VALUES\s*\(([^)]*)\)"
    r".*?\bON\s+CONFLICT\s*\(([^)]*)\)",
    re.IGNORECASE | re.DOTALL,
)


@lru_cache(maxsize=512)
def row_identity(sql: str) -> tuple[str, ...]:
    """The parameters of a write that say which row it touches, most significant first:
    the WHERE clause's for an UPDATE or DELETE, the conflict target's for an upsert,
    and every parameter in the order written for anything else."""
    upsert = _UPSERT.search(sql)
    if upsert is not None:
        columns = [c.strip().strip('"') for c in upsert.group(1).split(",")]
        values = [v.strip() for v in upsert.group(2).split(",")]
        bound = {c: v[1:] for c, v in zip(columns, values, strict=False) if _BIND.fullmatch(v)}
        target = [c.strip().strip('"') for c in upsert.group(3).split(",")]
        return tuple(dict.fromkeys(bound[c] for c in target if c in bound))
    where = _WHERE.search(sql)
    tail = sql[where.end() :] if where is not None else sql
    return tuple(dict.fromkeys(_BIND.findall(tail)))


def write_order(sql: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` sorted by the rows they touch (:func:`row_identity`), then by their other
    values: every transaction, in every process, takes the row locks of one group of
    writes in the same order, so two of them writing the same rows queue instead of
    deadlocking."""
    if len(rows) < 2:
        return rows
    first = row_identity(sql)
    names = first + tuple(sorted(n for n in rows[0] if n not in first))
    return sorted(rows, key=lambda row: tuple(_sortable(row.get(n)) for n in names))


def _sortable(value: Any) -> tuple[int, Any]:
    """A total order over parameter values of mixed types."""
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (1, int(value))
    if isinstance(value, int | float | Decimal):
        return (2, value)
    if isinstance(value, str):
        return (3, value)
    if isinstance(value, bytes):
        return (4, value)
    return (5, repr(value))


def inbox_key(env: Envelope, op: str | None) -> str:
    # The participant's inbox key for a saga command: one per saga, step and direction.
    return f"{env.saga_id}/{env.step}/{op}"


def step_key(env: Envelope) -> str:
    return f"{env.saga_id}/{env.step}/{env.op}/{env.attempt}"
