"""A participant's handler calls: each under its step's timeout, its end made an outcome.

A handler runs in its own savepoint (a command alone in its transaction runs without
one: see :class:`StepUndone`), under its step's timeout (or, inside a batch, the batch's
patience, if that is shorter). How it ended becomes the step's outcome: done with
its data, refused, deferred by an open breaker, waiting for a lock, or failed (retryable
unless what it handed back cannot travel). A handler past its time is cancelled and its
transaction rolled back (:class:`HandlerTimedOut`, :class:`HandlerTooSlow`); the late step
is remembered so that the transaction's next run answers it as a failed attempt, unrun.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sagakit.engine.breakers import BreakerOpen, CircuitBreaker
from sagakit.engine.locks import LockBusy, LockPolicy, Locks, queue_for
from sagakit.engine.step_context import Handler, StepContext
from sagakit.errors import DataError, SagaError, StepRejected
from sagakit.model.data import check_json
from sagakit.model.messages import Envelope, ReplyBody
from sagakit.ports import UnitOfWork

if TYPE_CHECKING:
    import structlog

#: Steps remembered for their transaction's next run: late ones (HandlerCalls.note_timeout)
#: and those undone with it (StepUndone).
_TIMED_OUT_KEPT = 10_000

#: The outcome of most steps (done, no data, no locks), made and written out once: a
#: frozen model can be shared, and its JSON is what every such step stores.
DONE = ReplyBody(ok=True)
_DONE_JSON = DONE.model_dump_json()


def stored_reply(body: ReplyBody) -> str:
    """``body`` as the inbox stores it."""
    return _DONE_JSON if body is DONE else body.model_dump_json()


class HandlerTimedOut(BaseException):
    """A handler ran past its step's timeout and was cancelled. Its statement may have
    been cut off mid-flight, so the connection is not trusted: the whole transaction
    rolls back and runs again, with that step answered as a failed attempt unrun."""

    def __init__(self, step: str, seconds: float) -> None:
        super().__init__(f"{step} ran past its timeout of {seconds:g}s")
        self.step = step
        self.seconds = seconds


class StepUndone(BaseException):
    """A command alone in its transaction runs without a savepoint (two round trips on
    every step, for the rare one that fails). When its handler fails after touching the
    connection, only rolling the whole transaction back undoes its writes: it rolls back
    and runs again, with the step answered by the outcome it had, unrun."""

    def __init__(self, step: str) -> None:
        super().__init__(f"{step} failed after writing; its transaction runs again")
        self.step = step


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


def step_key(env: Envelope) -> str:
    return f"{env.saga_id}/{env.step}/{env.op}/{env.attempt}"


class HandlerCalls:
    """Calls a participant's handlers, each in its savepoint under its step's timeout, and
    remembers the steps whose handler ran late."""

    def __init__(
        self,
        participant: str,
        *,
        breakers: Mapping[str, CircuitBreaker],
        log: structlog.stdlib.BoundLogger,
    ) -> None:
        self._participant = participant
        self._breakers = breakers
        self._log = log
        # Steps (step_key) whose handler ran past its timeout in a transaction that then
        # rolled back: the transaction's next run answers them as failed, unrun.
        self._timed_out: dict[str, float] = {}
        # Steps whose failure was undone with their whole transaction (StepUndone): the
        # outcome the next run answers unrun, and the lock queue it had joined, if any.
        self._answered: dict[str, tuple[ReplyBody, tuple[str, str] | None]] = {}
        self._queued: dict[str, tuple[str, str]] = {}

    def note_timeout(self, late: HandlerTimedOut) -> None:
        """The transaction ``late`` cut short has rolled back; when it runs again, the late
        step is answered as a failed attempt without running its handler again."""
        _keep(self._timed_out, late.step, late.seconds)
        saga_id, step = late.step.split("/", 2)[:2]
        self._log.warning(
            f"{step}: the handler ran past its timeout of {late.seconds:g}s; cancelled, its "
            "transaction rolled back, and the attempt counted as failed",
            saga_id=saga_id,
            step=step,
        )

    async def call(
        self, unit: UnitOfWork, env: Envelope, handler: Handler, *, default_timeout: float
    ) -> ReplyBody:
        """Run ``handler`` for the command ``env`` inside ``unit``; its outcome. A handler
        with no timeout of its own gets ``default_timeout`` seconds."""
        key = step_key(env)
        late = self._timed_out.get(key)
        if late is not None:
            reason = f"ran past its timeout of {late:g}s; cancelled and rolled back"
            return ReplyBody(ok=False, reason=reason, retryable=True)
        answered = self._answered.pop(key, None)
        if answered is not None:
            body, queued = answered
            if queued is not None:  # its place in line went with the rolled-back transaction
                await queue_for(unit.records.locks, *queued)
            return body
        ctx = StepContext(
            saga_id=env.saga_id,
            step=env.step or "",
            op=env.op or "action",
            attempt=env.attempt,
            message_id=env.message_id,
            payload=env.payload,
            connection=unit.connection,
            locks=Locks(
                unit.records.locks,
                participant=self._participant,
                saga_id=env.saga_id,
                step=env.step or "",
            ),
            breakers=self._breakers,
            writer=getattr(unit, "write_later", None),
            logger=self._log,
            traceparent=env.traceparent,
        )
        # A handler past its budget is cancelled. Its statement may have been cut off
        # mid-flight, so no savepoint is trusted to undo it: the whole transaction rolls
        # back (HandlerTimedOut) and runs again, answering this attempt as failed.
        budget = env.timeout or default_timeout
        patience = batch_patience.get()
        limit = budget if patience is None else min(budget, patience)
        timer = asyncio.timeout(limit)
        try:
            async with timer:
                body = await self._guarded(unit, env, handler, ctx)
        except BaseException as exc:
            if timer.expired():
                raise self._cut_short(key, limit, budget) from exc
            raise
        finally:
            queued = self._queued.pop(key, None)  # however the call ended
        if timer.expired():
            raise self._cut_short(key, limit, budget)
        if getattr(unit, "undone", None) == key:
            _keep(self._answered, key, (body, queued))
            raise StepUndone(key)
        return body

    def _cut_short(self, key: str, limit: float, budget: float) -> BaseException:
        if limit < budget:
            return HandlerTooSlow(key)  # it leaves the batch and runs alone
        return HandlerTimedOut(key, budget)

    async def _guarded(
        self, unit: UnitOfWork, env: Envelope, handler: Handler, ctx: StepContext
    ) -> ReplyBody:
        """Run ``handler`` in its savepoint; turn how it ended into the step's outcome."""
        try:
            async with unit.savepoint():
                data = _reply_data(await handler(ctx), env)
        except StepRejected as exc:
            ctx.log.warning(f"{env.step}: refused: {exc.reason}")
            try:
                check_json(exc.data, f"the data of {env.step}'s refusal")
            except DataError as bad:
                return self._bad_data(ctx, env, bad)
            return ReplyBody(ok=False, reason=exc.reason, data=exc.data, locks=ctx.locks.touched)
        except DataError as exc:
            return self._bad_data(ctx, env, exc)
        except BreakerOpen as exc:
            ctx.log.info(f"{env.step}: deferred, {exc}")
            return ReplyBody(
                ok=False,
                reason=str(exc),
                retryable=True,
                deferred=True,
                retry_after=exc.retry_after,
            )
        except LockBusy as exc:
            ctx.log.info(f"{env.step}: waiting, {exc}")
            if exc.policy is LockPolicy.QUEUE:
                # Outside the rolled-back savepoint: the place in line must survive it.
                await queue_for(unit.records.locks, exc.resource, env.saga_id)
                self._queued[step_key(env)] = (exc.resource, env.saga_id)
            queued = exc.policy is LockPolicy.QUEUE
            return ReplyBody(ok=False, reason=str(exc), retryable=True, locks=queued)
        except SagaError as exc:
            ctx.log.warning(f"{env.step}: failed ({exc}); retryable={exc.retryable}")
            return ReplyBody(ok=False, reason=str(exc), retryable=True)
        except Exception as exc:
            if _cancelling():  # cut short by a stop or its timeout, not a failure of its own
                raise
            # The story's line names the error; its traceback follows it.
            ctx.log.exception(
                f"{env.step}: handler {env.type} raised {type(exc).__name__}: {exc} "  # noqa: TRY401
                f"(attempt {env.attempt}; it will be retried or compensated)",
                attempt=env.attempt,
            )
            return ReplyBody(ok=False, reason=f"{type(exc).__name__}: {exc}", retryable=True)
        if not data and not ctx.locks.touched:
            return DONE
        return ReplyBody(ok=True, data=data, locks=ctx.locks.touched)

    def _bad_data(self, ctx: StepContext, env: Envelope, exc: DataError) -> ReplyBody:
        """A handler handed back what cannot travel: the attempt fails now, for good (the
        same code would hand back the same again), and its writes are rolled back."""
        ctx.log.error(f"{env.step}: handler {env.type} failed: {exc}", attempt=env.attempt)
        return ReplyBody(ok=False, reason=str(exc), retryable=False)


def _keep(remembered: dict[str, Any], key: str, value: Any) -> None:
    """Remember ``value`` for ``key``, forgetting the oldest past ``_TIMED_OUT_KEPT``."""
    remembered[key] = value
    while len(remembered) > _TIMED_OUT_KEPT:
        del remembered[next(iter(remembered))]


def _reply_data(data: object, env: Envelope) -> dict[str, Any]:
    """What a handler returned, as the data its reply adds to the saga's (a dict of JSON
    values, or nothing); DataError naming the step otherwise."""
    if data is None:
        return {}
    where = f"the reply of {env.step} ({env.type})"
    if not isinstance(data, Mapping):
        raise DataError(
            f"{where} is a {type(data).__name__}; a handler returns a dict (merged into "
            "the saga's data) or None"
        )
    check_json(data, where)
    return dict(data)


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
