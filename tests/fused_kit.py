"""A fused runtime for the tests: an orchestrator and its participants in one
``Runtime.fuse``, with sagas started and awaited the way users do."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sagakit import Orchestrator, Participant, Runtime, SagaDefinition, SagaHandle
from sagakit.engine.fused import FusedEngine
from sagakit.ports import SagaStore


class Fused:
    def __init__(
        self,
        store: SagaStore,
        definitions: Sequence[SagaDefinition],
        participants: Iterable[Participant],
        *,
        sweep_interval: float | None = None,
        timer_interval: float = 0.1,
        **options: Any,
    ) -> None:
        self.store = store
        self.orchestrator = Orchestrator(store, definitions)
        self.runtime = Runtime(timer_interval=timer_interval).fuse(
            self.orchestrator, *participants, **options
        )
        self.engine: FusedEngine = self.runtime.fused[self.orchestrator.group]
        if sweep_interval is not None:
            self.engine.sweep_interval = sweep_interval

    async def __aenter__(self) -> Fused:
        await self.runtime.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.runtime.stop()

    async def begin(self, definition: str, data: Mapping[str, Any], **kw: Any) -> SagaHandle:
        """Start a saga; its handle once its start (and first step) committed."""
        return await self.orchestrator.start(definition, data, **kw)

    async def run(self, definition: str, data: Mapping[str, Any], **kw: Any) -> str:
        """Start a saga and return how it ended."""
        handle = await self.orchestrator.start(definition, data, **kw)
        return (await handle.outcome()).value

    async def wait(self, saga_id: str, *, timeout: float = 30.0) -> str:
        return (await SagaHandle(saga_id, self.store).outcome(timeout=timeout)).value
