"""What a participant's handler gets: the command, and the transaction to do its work in.

A handler reads its command from :class:`StepContext`, does its work on ``connection``
(or through :meth:`StepContext.write`, which a batch may hold for a grouped send), and
takes semantic locks and circuit breakers from it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import Executable, text

from sagakit.engine.breakers import CircuitBreaker
from sagakit.engine.locks import Locks
from sagakit.model.messages import REASON_KEY, Op
from sagakit.observe import tracing
from sagakit.observe.logs import get_logger

if TYPE_CHECKING:
    import structlog
    from sqlalchemy.ext.asyncio import AsyncConnection

#: Takes a step's write for later: ``(saga_id, statement, params)``.
Writer = Callable[[str, Executable, dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class StepContext:
    """What a handler gets: the command, and the transaction to do its work in."""

    saga_id: str
    step: str
    op: Op
    attempt: int
    message_id: str
    payload: Mapping[str, Any]
    connection: AsyncConnection
    #: Semantic locks on this participant's records, held by this saga.
    locks: Locks
    #: The participant's circuit breakers, by name (``async with ctx.breakers["gw"]:``).
    breakers: Mapping[str, CircuitBreaker]
    #: Where :meth:`write` sends a write when the runtime batches them (None: at once).
    writer: Writer | None = field(default=None, repr=False)
    #: The participant's logger, which :attr:`log` binds to this step.
    logger: structlog.stdlib.BoundLogger = field(
        default_factory=lambda: get_logger("sagakit.participant"), repr=False
    )
    #: The command's trace context (its trace id goes into every log line).
    traceparent: str | None = field(default=None, repr=False)

    @property
    def log(self) -> structlog.stdlib.BoundLogger:
        """A logger bound to this saga, step and trace. Bound when asked for: binding cost
        more than many handlers' work, and most steps log nothing."""
        return self.logger.bind(
            saga_id=self.saga_id, step=self.step, trace_id=tracing.trace_id(self.traceparent)
        )

    @property
    def reason(self) -> str | None:
        """Why the saga is being undone, for a compensation (None for an action)."""
        value = self.payload.get(REASON_KEY)
        return str(value) if value is not None else None

    async def write(
        self, statement: str | Executable, params: Mapping[str, Any] | None = None
    ) -> None:
        """Run a write (INSERT, UPDATE, DELETE) whose result the handler does not read.

        It commits or vanishes with the step, like a statement on ``connection``, and it
        runs before any later statement of this handler on ``connection``. Until then it
        waits, so that it can go out together with the same write of the other steps in
        the batch: a participant's batch and the fused runtime send each such group as
        one pipelined ``executemany`` just before the next statement on the connection
        or after the last handler. A handler that writes only this way needs no
        savepoint either. So prefer this to ``connection.execute`` for writes whose row
        count or rows you do not inspect. A write that fails fails the step as a
        statement on the connection would.
        """
        compiled = _text(statement) if isinstance(statement, str) else statement
        values = dict(params or {})
        if self.writer is None:
            await self.connection.execute(compiled, values)
        else:
            await self.writer(self.saga_id, compiled, values)


Handler = Callable[[StepContext], Awaitable[Mapping[str, Any] | None]]


@lru_cache(maxsize=512)
def _text(sql: str) -> Executable:
    return text(sql)
