"""Group commit: callers that ask for the same kind of write at the same time share one
transaction.

A service that starts sagas from many requests at once (an HTTP API under load) would
otherwise pay one transaction per start: a BEGIN, the loads, the append and a COMMIT
each, with the database's commit cost and the process's per-statement cost repeated
for every caller. Here the first caller's write waits for one pass of the event loop,
so that the calls made meanwhile join it; calls made while a transaction runs go in
the next one (up to ``limit`` in each). A caller waits for the transaction running
when it called, if any, and then for its own.

A transaction that fails is tried again one caller at a time, so each caller gets its
own outcome: one bad request never fails the others that happened to share its
transaction. The flush must therefore be safe to repeat for items whose transaction
rolled back (starting a saga with an id chosen up front is). It runs in a context of
its own, so what a caller needs from its own context (its trace) goes in its item.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class GroupCommit(Generic[Item, Result]):
    """Calls ``flush`` with the items submitted together; answers each submitter."""

    def __init__(
        self,
        flush: Callable[[Sequence[Item]], Awaitable[Sequence[Result]]],
        *,
        limit: int = 256,
        shared: Callable[[Exception], bool] = lambda exc: False,
    ) -> None:
        """``shared(exc)``: whether a failed flush's error is the transaction's, not any
        one item's (the database is unreachable): every caller gets it at once, instead
        of each trying alone against a database that is down."""
        self._flush = flush
        self._limit = limit
        self._shared = shared
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        """``item``'s result, once the transaction that carried it committed."""
        loop = asyncio.get_running_loop()
        if self._task is not None and self._task.get_loop() is not loop:
            return (await self._flush([item]))[0]  # a caller on another event loop
        future: asyncio.Future[Result] = loop.create_future()
        self._pending.append((item, future))
        if self._task is None:
            # A context of its own: the flush serves many callers, so it must not carry
            # the first one's context variables (its trace span, its log bindings).
            self._task = loop.create_task(self._drain(), context=contextvars.Context())
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self._limit]
                del self._pending[: self._limit]
                await self._answer(batch)
        finally:
            self._task = None
            for _, future in self._pending:  # cancelled while items waited
                future.cancel()
            self._pending.clear()

    async def _answer(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        waiting = [(item, future) for item, future in batch if not future.cancelled()]
        try:
            await self._settle(waiting)
        except BaseException:
            for _, future in waiting:  # the flush itself was cancelled: so are its callers
                future.cancel()
            raise

    async def _settle(self, waiting: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        if not waiting:
            return
        try:
            results = await self._flush([item for item, _ in waiting])
        except Exception as exc:
            if len(waiting) == 1 or self._shared(exc):
                for _, future in waiting:
                    _fail(future, exc)
                return
            for item, future in waiting:  # each alone: its own outcome, not a neighbour's
                if future.cancelled():
                    continue
                try:
                    _resolve(future, (await self._flush([item]))[0])
                except Exception as alone:
                    _fail(future, alone)
            return
        for (_, future), result in zip(waiting, results, strict=True):
            _resolve(future, result)


def _resolve(future: asyncio.Future[Result], result: Result) -> None:
    if not future.done():  # done: its caller stopped waiting
        future.set_result(result)


def _fail(future: asyncio.Future[Result], exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)
