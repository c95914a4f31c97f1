"""Starting sagas: what a start asks for, and the path an orchestrator's starts take.

Starts made at the same time share one transaction (:mod:`sagakit.engine.groupcommit`),
unless a runtime that runs the first step in the start's own transaction took them over
(``Runtime.fuse``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sagakit.engine.groupcommit import GroupCommit
from sagakit.errors import ConcurrencyError, StoreError
from sagakit.model.data import check_json_object, check_key, check_saga_id
from sagakit.model.decision import Decision
from sagakit.model.definition import SagaDefinition
from sagakit.model.messages import new_id
from sagakit.model.triggers import Start

if TYPE_CHECKING:
    from sagakit.engine.orchestrator import Orchestrator

#: Transactions a start, or a batch of the orchestrator's, is tried in before it gives
#: up on a conflict with another orchestrator.
MAX_CONFLICT_RETRIES = 8


@dataclass(frozen=True, slots=True)
class StartRequest:
    """One saga to start; ``saga_id`` makes starting idempotent when the caller picks it.

    ``definition`` is a definition's name, or the SagaDefinition itself (its version
    then, unless ``version`` says otherwise). The data must be a dict of JSON values
    (:mod:`sagakit.model.data`); anything else is refused here, with where and why."""

    definition: str
    data: Mapping[str, Any]
    saga_id: str | None = None
    key: str | None = None
    version: int | None = None
    traceparent: str | None = None

    def __post_init__(self) -> None:
        name, version = definition_named(self.definition, self.version)
        object.__setattr__(self, "definition", name)
        object.__setattr__(self, "version", version)
        check_saga_id(self.saga_id)
        check_key(self.key)
        object.__setattr__(self, "data", check_json_object(self.data, "the saga's start data"))


def definition_named(definition: object, version: int | None) -> tuple[str, int | None]:
    """The name and version a saga is started by, given a definition's name or the
    SagaDefinition itself (its own version unless ``version`` says otherwise)."""
    if isinstance(definition, SagaDefinition):
        return definition.name, definition.version if version is None else version
    if not isinstance(definition, str):
        raise TypeError(
            "a saga is started by its definition's name or its SagaDefinition, "
            f"not {type(definition).__name__}"
        )
    return definition, version


class Starter:
    """The path one orchestrator's starts take: shared start transactions, or the
    starter a runtime handed them to (:meth:`hand_to`)."""

    def __init__(self, orchestrator: Orchestrator) -> None:
        self._orchestrator = orchestrator
        self._shared: GroupCommit[StartRequest, str] = GroupCommit(
            self.start_together, shared=_unreachable
        )
        self._path: Callable[[StartRequest], Awaitable[str]] = self._shared.submit

    def hand_to(self, starter: Callable[[StartRequest], Awaitable[str]] | None) -> None:
        """Have ``starter`` run the starts from now on; None takes them back."""
        self._path = starter or self._shared.submit

    async def start(self, request: StartRequest) -> str:
        """Start one saga, sharing a transaction with the starts made at the same time."""
        return await self._path(request)

    async def start_many(self, requests: Sequence[StartRequest]) -> list[str]:
        """Start many sagas at once: in one transaction, unless a runtime runs the starts."""
        if self._path != self._shared.submit:
            return await asyncio.gather(*(self._path(r) for r in requests))
        return await self.start_together(requests)

    async def start_together(self, requests: Sequence[StartRequest]) -> list[str]:
        """Start many sagas in one transaction."""
        orchestrator = self._orchestrator
        planned = [
            (orchestrator.definition(r.definition, r.version), r, r.saga_id or new_id())
            for r in requests
        ]
        ids = [saga_id for _, _, saga_id in planned]
        for _ in range(MAX_CONFLICT_RETRIES):
            try:
                async with orchestrator.store.unit() as unit:
                    existing = await unit.load(ids)
                    now = await orchestrator.now_in(unit)
                    decisions: dict[str, Decision] = {}
                    for definition, request, saga_id in planned:
                        if saga_id in existing.states or saga_id in existing.broken:
                            continue
                        if saga_id in decisions:
                            continue
                        trigger = Start(
                            saga_id, dict(request.data), request.key, request.traceparent
                        )
                        decisions[saga_id] = await orchestrator.decide_in(
                            unit,
                            definition,
                            None,
                            trigger,
                            now=now,
                            traceparent=request.traceparent,
                        )
                    await unit.append(list(decisions.values()))
                orchestrator.committed(decisions.values())
                return ids
            except ConcurrencyError:
                continue
        raise ConcurrencyError(f"could not start {len(ids)} saga(s): kept conflicting")


def _unreachable(exc: Exception) -> bool:
    """A start's failure that is its transaction's, not its own: the store is down or
    the connection broke (every start that shared it gets the error at once)."""
    return isinstance(exc, StoreError) and exc.retryable
