"""Held writes: the transaction's connection as a batch's handlers see it.

Each step's handler gets a savepoint only if it touches the connection (opened at its
first statement, after the earlier steps' held writes went out), so a step that fails
undoes its own writes and nobody else's. A command alone in its transaction (``solo``)
gets none: a step that fails after touching the connection marks the transaction
``undone``, and the whole of it rolls back instead (see
:class:`~sagakit.engine.handler_call.StepUndone`). Writes handed to ``StepContext.write`` wait and
go out grouped, in an order that depends only on the rows they touch (see
:func:`sagakit.engine.write_order.write_order`), so two transactions that write the same
rows lock them in the same order. A group that fails sends the batch round again, those
sagas' writes one by one (:class:`Unbatch`).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from sqlalchemy.exc import DBAPIError

from sagakit.engine.write_order import write_order
from sagakit.errors import StoreError

#: Opens a savepoint (UnitOfWork.savepoint).
Opener = Callable[[], contextlib.AbstractAsyncContextManager[None]]
#: Awaited once, before the first statement the handlers' connection sends.
Hook = Callable[[], Awaitable[None]]

#: What a lone command's step "opens" instead of a savepoint: the whole transaction.
_WHOLE_TRANSACTION: contextlib.AbstractAsyncContextManager[None] = contextlib.nullcontext()


class Unbatch(BaseException):
    """A group of batched writes failed: the batch must roll back and run again with
    these sagas' writes sent one at a time, so the failure reaches its own step.

    A BaseException so that it passes through the participant's catch-all, which would
    otherwise turn it into some other step's failure and let the batch commit.
    """

    def __init__(self, saga_ids: set[str], cause: BaseException) -> None:
        super().__init__(f"a batched write failed: {cause}")
        self.saga_ids = saga_ids


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
        solo: bool = False,
    ) -> None:
        self._connection = connection
        self._solo = solo
        #: The step that failed after touching the connection with no savepoint to roll
        #: back (solo): only the whole transaction's rollback undoes it.
        self.undone: str | None = None
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
            if opened is _WHOLE_TRANSACTION:
                self.undone = step
            elif opened is not None:
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
        opened = _WHOLE_TRANSACTION if self._solo else opener()
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
