"""What starting a saga gives back: a handle that is the saga's id and waits for its end."""

from __future__ import annotations

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


__all__ = ["SagaHandle"]
