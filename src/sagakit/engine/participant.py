"""Participants: the services that run a saga's local transactions.

A participant registers one handler per command. Each command runs inside one local
transaction holding, together: the inbox row, the handler's business writes, and the
reply in the outbox. So a command's effect and its reply commit or vanish together,
and a redelivered command finds its inbox row and gets the stored reply back.

The inbox row of a saga command is keyed by the saga, the step and the direction
(``saga/step/action``, ``saga/step/compensation``) rather than by message id, which
makes it the barrier as well:

* a retry of a step, under a new message id, still finds the step's first outcome;
* a compensation for an action that never ran claims the action's key first, records a
  no-op and tells the orchestrator nothing needed undoing (the null compensation);
* an action arriving after its own compensation finds its key taken and does nothing
  (the hanging action).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Executable, text

from sagakit.clock import SystemClock
from sagakit.engine.batching import (
    BatchInbox,
    HandlerTimedOut,
    HandlerTooSlow,
    Unbatch,
    batch_patience,
    inbox_key,
    patience_for,
    step_key,
)
from sagakit.engine.breakers import BreakerOpen, CircuitBreaker
from sagakit.engine.breakers import load as load_breakers
from sagakit.engine.breakers import save as save_breakers
from sagakit.engine.locks import LockBusy, LockPolicy, Locks, queue_for, release_saga
from sagakit.errors import DataError, PoisonMessageError, SagaError, StepRejected
from sagakit.model.contracts import AnyHandler, as_handler
from sagakit.model.data import check_json
from sagakit.model.messages import (
    REASON_KEY,
    RELEASE,
    Envelope,
    MessageKind,
    Op,
    Outgoing,
    ReplyBody,
    command_queue,
    new_id,
)
from sagakit.observe import tracing
from sagakit.observe.logs import get_logger
from sagakit.ports import Clock, Delivery, SagaStore, UnitOfWork

if TYPE_CHECKING:
    import structlog
    from sqlalchemy.ext.asyncio import AsyncConnection

#: Late steps remembered for their transaction's next run (Participant.note_timeout).
_TIMED_OUT_KEPT = 10_000

_PREVENTED = ReplyBody(
    ok=False, reason="prevented: compensated before it ran", retryable=False
).model_dump_json()
#: The outcome of most steps (done, no data, no locks), made and written out once: a
#: frozen model can be shared, and its JSON is what every such step stores.
_DONE = ReplyBody(ok=True)
_DONE_JSON = _DONE.model_dump_json()


def _stored(body: ReplyBody) -> str:
    return _DONE_JSON if body is _DONE else body.model_dump_json()


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
_H = TypeVar("_H", bound="AnyHandler")


@lru_cache(maxsize=512)
def _text(sql: str) -> Executable:
    return text(sql)


class Participant:
    """A named service that runs commands against its own store."""

    def __init__(
        self,
        name: str,
        store: SagaStore,
        *,
        clock: Clock | None = None,
        service_log: str | None = None,
        breakers: Sequence[CircuitBreaker] = (),
        handler_timeout: float = 30.0,
        concurrency: int = 4,
    ) -> None:
        self.name = name
        #: Batches of commands handled at once, each its own transaction: a handler that
        #: hangs holds its own batch until its timeout, and the others go on.
        self.concurrency = concurrency
        self._lone_slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        #: Seconds a handler may run when its command names no timeout of its own.
        self.handler_timeout = handler_timeout
        # Steps (step_key) whose handler ran past its timeout in a transaction that then
        # rolled back: the transaction's next run answers them as failed, unrun.
        self._timed_out: dict[str, float] = {}
        self.breakers = {breaker.name: breaker for breaker in breakers}
        self._breakers_loaded = not self.breakers
        self.store = store
        self.clock: Clock = clock or SystemClock()
        self.queue = command_queue(name)
        self.consumer = f"participant:{name}"
        self._handlers: dict[str, Handler] = {}
        self._logger_name = service_log or f"sagakit.participant.{name}"
        self.log = get_logger(self._logger_name, service=name)

    @property
    def bindings(self) -> tuple[str, ...]:
        return ()

    def command(self, name: str) -> Callable[[_H], _H]:
        """Register the decorated coroutine as the handler of command ``name``."""

        def register(handler: _H) -> _H:
            self.on(name, handler)
            return handler

        return register

    def on(self, name: str, handler: AnyHandler) -> None:
        """Handle command ``name`` with ``handler``: ``(ctx)``, or typed ``(ctx, command)``
        with pydantic models (see :mod:`sagakit.model.contracts`)."""
        if name in self._handlers:
            raise ValueError(f"participant {self.name!r} already handles {name!r}")
        if not inspect.iscoroutinefunction(handler) and not inspect.iscoroutinefunction(
            getattr(handler, "__call__", None)  # noqa: B004 - an object with an async __call__
        ):
            what = getattr(handler, "__qualname__", type(handler).__name__)
            raise TypeError(
                f"the handler of {self.name}.{name} ({what}) must be an async function "
                "(async def); sagakit awaits it inside the step's transaction"
            )
        self._handlers[name] = as_handler(handler)

    @property
    def commands(self) -> list[str]:
        return sorted(self._handlers)

    async def handle(self, deliveries: Sequence[Delivery]) -> None:
        """Run a batch of commands in one transaction.

        Each handler runs in its own savepoint, opened when it first touches the
        connection: a handler that writes only through :meth:`StepContext.write` needs
        none, and its writes go out grouped with the other commands' (one
        ``executemany`` per kind of write) after the last handler. The batch's inbox
        keys are claimed in one statement and its replies stored in another. If a
        grouped write fails, the batch rolls back and runs again with those sagas'
        writes sent one by one, so the failure lands on its own step.
        """
        commands: list[tuple[Envelope, Handler]] = []
        releases: list[str] = []
        carried: dict[str, Delivery] = {}  # each command's delivery, by message id
        for delivery in deliveries:
            try:
                envelope = Envelope.from_bytes(delivery.message.body)
                if envelope.type == f"{self.name}.{RELEASE}":
                    releases.append(envelope.saga_id)
                    continue
                handler = self._handler_for(envelope)
            except PoisonMessageError as exc:
                self.log.warning(f"rejected a message: {exc}")
                delivery.reject(exc.reason, exc.detail)
                continue
            commands.append((envelope, handler))
            carried[envelope.message_id] = delivery
        if not commands and not releases:
            return
        alone = await self._handle_batch(commands, releases)
        if not alone:
            return
        # The batch committed without its slow commands: what it did is done now (the
        # transport need not hold it back), and those run each in a transaction of its
        # own, side by side.
        slow = {env.message_id for env, _ in alone}
        for message_id, delivery in carried.items():
            if message_id not in slow:
                delivery.done()
        await asyncio.gather(*(self._alone(command) for command in alone))

    async def _alone(self, command: tuple[Envelope, Handler]) -> None:
        """A command too slow for its batch, in a transaction of its own (no more of
        those at once than the participant has batches)."""
        loop = asyncio.get_running_loop()
        if self._lone_slots is None or self._lone_slots[0] is not loop:
            self._lone_slots = (loop, asyncio.Semaphore(self.concurrency))
        async with self._lone_slots[1]:
            await self._handle_batch([command], [])

    async def _handle_batch(
        self, commands: Sequence[tuple[Envelope, Handler]], releases: Sequence[str]
    ) -> list[tuple[Envelope, Handler]]:
        """Run ``commands`` in one transaction, again and again until it commits; return
        the commands that left it for being too slow."""
        unbatched: set[str] = set()
        alone: list[tuple[Envelope, Handler]] = []
        batch = list(commands)
        while batch or releases:  # each round settles one more saga's writes, timeout or slowness
            batch_patience.set(patience_for([env for env, _ in batch]))
            try:
                await self._handle_once(batch, releases, unbatched)
                return alone
            except Unbatch as unbatch:
                unbatched.update(unbatch.saga_ids)
            except HandlerTimedOut as late:
                self.note_timeout(late)
            except HandlerTooSlow as slow:
                alone.extend(c for c in batch if step_key(c[0]) == slow.step)
                batch = [c for c in batch if step_key(c[0]) != slow.step]
        return alone

    async def _handle_once(
        self,
        commands: Sequence[tuple[Envelope, Handler]],
        releases: Sequence[str],
        unbatched: set[str],
    ) -> None:
        async with self.store.unit() as unit:
            if not self._breakers_loaded:
                await load_breakers(unit.records.breakers, list(self.breakers.values()))
                self._breakers_loaded = True
            for saga_id in releases:
                released = await release_saga(unit.records.locks, saga_id, self.name)
                self.log.info(f"released {released} lock(s) of a finished saga", saga_id=saga_id)
            inbox = BatchInbox(
                unit,
                unbatched=unbatched,
                translate=self.store.translate,
            )
            if len(commands) > 1:
                await self._preclaim(inbox, [env for env, _ in commands])
            replies = []
            for env, handler in commands:
                inbox.begin(env)
                replies.append(await self._run(inbox.unit, env, handler))
            await inbox.flush_writes()
            inbox.check_used()
            await unit.enqueue(replies, replies=inbox.take_replies())
            await save_breakers(unit.records.breakers, list(self.breakers.values()))

    async def _preclaim(self, inbox: BatchInbox, commands: Sequence[Envelope]) -> None:
        """Claim, in bulk, every inbox key that executing ``commands`` will ask for."""
        await inbox.preclaim_commands([(self.consumer, env) for env in commands])

    def _handler_for(self, envelope: Envelope) -> Handler:
        prefix = f"{self.name}."
        if envelope.kind is not MessageKind.COMMAND or not envelope.type.startswith(prefix):
            raise PoisonMessageError(
                "unknown_type",
                f"{envelope.kind} {envelope.type!r} is not a command for {self.name}",
            )
        handler = self._handlers.get(envelope.type[len(prefix) :])
        if handler is None:
            raise PoisonMessageError(
                "unknown_type",
                f"{self.name} has no handler for {envelope.type!r} (handles {self.commands})",
            )
        if not envelope.step or not envelope.op or not envelope.reply_to:
            raise PoisonMessageError("schema", "a saga command needs step, op and reply_to")
        return handler

    async def _run(self, unit: UnitOfWork, env: Envelope, handler: Handler) -> Outgoing:
        with self.step_span(env) as hop:
            return self._reply(env, await self.execute(unit, env, handler), traceparent=hop)

    def step_span(self, command: Envelope) -> AbstractContextManager[str | None]:
        """A ``saga.step`` span under the command's trace context; yields the context the
        outcome should carry on."""
        attributes = {
            "saga.id": command.saga_id,
            "saga.step": command.step,
            "saga.op": command.op,
            "saga.participant": self.name,
            "messaging.message.id": command.message_id,
        }
        return _hop(tracing.span("saga.step", command.traceparent, attributes))

    def handler(self, command: str) -> Handler:
        """The handler registered for ``command``; KeyError if there is none."""
        return self._handlers[command]

    async def execute(self, unit: UnitOfWork, command: Envelope, handler: Handler) -> ReplyBody:
        """Run one saga command inside ``unit``: the inbox/barrier, the handler in its own
        savepoint, and the outcome stored for duplicates. Sends nothing; the caller turns
        the outcome into a reply (orchestration) or an event (choreography). A duplicate
        comes back as the stored outcome with ``duplicate`` set."""
        env = command
        key = inbox_key(env, env.op)
        if not await unit.claim(self.consumer, [key]):
            stored = (await unit.replies(self.consumer, [key])).get(key)
            if stored == _PREVENTED:
                what = "arrived after its compensation; not run"
            else:
                what = f"duplicate ignored (message {env.message_id[:8]})"
            self.log.info(f"{env.type} for {env.step}: {what}", saga_id=env.saga_id, step=env.step)
            body = ReplyBody.model_validate_json(stored) if stored else _retry_later()
            return body.model_copy(update={"duplicate": True})
        if env.op == "compensation":
            return await self._compensate(unit, env, handler, key)
        return await self._act(unit, env, handler, key)

    async def _act(self, unit: UnitOfWork, env: Envelope, handler: Handler, key: str) -> ReplyBody:
        body = await self._call(unit, env, handler)
        if body.retryable:
            await unit.forget(self.consumer, key)  # it did not happen; a retry must run it
        else:
            await unit.set_reply(self.consumer, key, _stored(body))
        return body

    async def _compensate(
        self, unit: UnitOfWork, env: Envelope, handler: Handler, key: str
    ) -> ReplyBody:
        action_key = inbox_key(env, "action")
        if await unit.claim(self.consumer, [action_key]):
            await unit.set_reply(self.consumer, action_key, _PREVENTED)
            body = ReplyBody(ok=True, data={"null_compensation": True})
            self.log.info(
                f"{env.step}: nothing to undo, the action never ran here",
                saga_id=env.saga_id,
                step=env.step,
            )
        else:
            stored = (await unit.replies(self.consumer, [action_key])).get(action_key)
            if stored is not None and not ReplyBody.model_validate_json(stored).ok:
                body = ReplyBody(ok=True, data={"null_compensation": True})
            else:
                body = await self._call(unit, env, handler)
                if not body.ok:
                    body = body.model_copy(update={"retryable": True})
        if body.ok:
            await unit.set_reply(self.consumer, key, _stored(body))
        else:
            await unit.forget(self.consumer, key)
        return body

    def note_timeout(self, late: HandlerTimedOut) -> None:
        """The transaction ``late`` cut short has rolled back; when it runs again, the late
        step is answered as a failed attempt without running its handler again."""
        self._timed_out[late.step] = late.seconds
        while len(self._timed_out) > _TIMED_OUT_KEPT:
            del self._timed_out[next(iter(self._timed_out))]
        saga_id, step = late.step.split("/", 2)[:2]
        self.log.warning(
            f"{step}: the handler ran past its timeout of {late.seconds:g}s; cancelled, its "
            "transaction rolled back, and the attempt counted as failed",
            saga_id=saga_id,
            step=step,
        )

    async def _call(self, unit: UnitOfWork, env: Envelope, handler: Handler) -> ReplyBody:
        key = step_key(env)
        late = self._timed_out.get(key)
        if late is not None:
            reason = f"ran past its timeout of {late:g}s; cancelled and rolled back"
            return ReplyBody(ok=False, reason=reason, retryable=True)
        ctx = StepContext(
            saga_id=env.saga_id,
            step=env.step or "",
            op=env.op or "action",
            attempt=env.attempt,
            message_id=env.message_id,
            payload=env.payload,
            connection=unit.connection,
            locks=Locks(
                unit.records.locks, participant=self.name, saga_id=env.saga_id, step=env.step or ""
            ),
            breakers=self.breakers,
            writer=getattr(unit, "write_later", None),
            logger=self.log,
            traceparent=env.traceparent,
        )
        # A handler past its budget is cancelled. Its statement may have been cut off
        # mid-flight, so no savepoint is trusted to undo it: the whole transaction rolls
        # back (HandlerTimedOut) and runs again, answering this attempt as failed.
        budget = env.timeout or self.handler_timeout
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
        if timer.expired():
            raise self._cut_short(key, limit, budget)
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
            return _DONE
        return ReplyBody(ok=True, data=data, locks=ctx.locks.touched)

    def _bad_data(self, ctx: StepContext, env: Envelope, exc: DataError) -> ReplyBody:
        """A handler handed back what cannot travel: the attempt fails now, for good (the
        same code would hand back the same again), and its writes are rolled back."""
        ctx.log.error(f"{env.step}: handler {env.type} failed: {exc}", attempt=env.attempt)
        return ReplyBody(ok=False, reason=str(exc), retryable=False)

    def _reply(
        self, command: Envelope, body: ReplyBody, *, traceparent: str | None = None
    ) -> Outgoing:
        envelope = Envelope(
            message_id=new_id(),
            type=f"{command.type}.reply",
            kind=MessageKind.REPLY,
            saga_id=command.saga_id,
            causation_id=command.message_id,
            created_at=self.clock.now(),
            traceparent=traceparent or command.traceparent,
            step=command.step,
            op=command.op,
            attempt=command.attempt,
            payload=body.model_dump(),
        )
        return Outgoing(command.reply_to or "", envelope)


@contextmanager
def _hop(
    opened: AbstractContextManager[tuple[Any, str | None]],
) -> Iterator[str | None]:
    with opened as (_, traceparent):
        yield traceparent


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


def _retry_later() -> ReplyBody:
    # A claimed key without a reply cannot outlive its transaction; treat it as transient.
    return ReplyBody(ok=False, reason="in progress elsewhere", retryable=True)
