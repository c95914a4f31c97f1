"""What starting a saga gives back: a handle that is the saga's id and waits for its end.

There is one way to wait for sagas: through their handles. ``await handle.outcome()``
waits for one; :func:`outcomes` waits for many at once (the batch form, as
``start_many`` is of ``start``). A saga started elsewhere (another process, an HTTP
call) is waited on through ``SagaHandle(saga_id, store)``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING

from sagakit.model.status import SagaStatus

if TYPE_CHECKING:
    from sagakit.ports import SagaStore


class SagaHandle(str):
    """A started saga. It *is* the saga's id (a ``str``: store it, log it, pass it
    wherever an id goes), and ``await handle.outcome()`` waits for the saga to end and
    says how: completed, compensated, needs_attention or resolved.

    Every way of waiting goes through the store the saga lives in
    (``SagaStore.wait_ended``), which hears ends decided in this process at once and,
    on PostgreSQL, those announced by other processes, so a wait costs no polling."""

    _store: SagaStore

    def __new__(cls, saga_id: str, store: SagaStore) -> SagaHandle:
        handle = super().__new__(cls, saga_id)
        handle._store = store
        return handle

    @property
    def saga_id(self) -> str:
        return str.__str__(self)

    async def outcome(self, *, timeout: float = 30.0) -> SagaStatus:
        """The saga's terminal status once it has ended; TimeoutError after ``timeout``
        seconds."""
        ended = await self._store.wait_ended([self.saga_id], timeout=timeout)
        return SagaStatus(ended[self.saga_id])

    def __repr__(self) -> str:
        return f"SagaHandle({self.saga_id!r})"


async def outcomes(
    handles: Iterable[SagaHandle], *, timeout: float = 30.0
) -> dict[str, SagaStatus]:
    """How each saga ended, once all have: ``{saga_id: status}``, the batch form of
    ``handle.outcome()``. TimeoutError naming the unfinished after ``timeout`` seconds.
    Handles of sagas in different stores are waited on together, each store once."""
    by_store: dict[int, tuple[SagaStore, list[str]]] = {}
    for handle in handles:
        if not isinstance(handle, SagaHandle):
            raise TypeError(
                f"outcomes() takes the handles start() returned, not {type(handle).__name__}; "
                "for a saga id started elsewhere, pass SagaHandle(saga_id, store)"
            )
        by_store.setdefault(id(handle._store), (handle._store, []))[1].append(handle.saga_id)
    ended = await asyncio.gather(
        *(store.wait_ended(ids, timeout=timeout) for store, ids in by_store.values())
    )
    return {saga_id: SagaStatus(status) for each in ended for saga_id, status in each.items()}


__all__ = ["SagaHandle", "outcomes"]
