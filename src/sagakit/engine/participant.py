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
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar

from sagakit.clock import SystemClock
from sagakit.engine.batching import BatchInbox, inbox_key
from sagakit.engine.breakers import CircuitBreaker
from sagakit.engine.breakers import load as load_breakers
from sagakit.engine.breakers import save as save_breakers
from sagakit.engine.handler_call import (
    HandlerCalls,
    HandlerTimedOut,
    HandlerTooSlow,
    batch_patience,
    patience_for,
    step_key,
    stored_reply,
)
from sagakit.engine.held_writes import Unbatch
from sagakit.engine.locks import release_saga
from sagakit.engine.step_context import Handler, StepContext, Writer
from sagakit.errors import PoisonMessageError
from sagakit.model.contracts import AnyHandler, as_handler
from sagakit.model.messages import (
    RELEASE,
    Envelope,
    MessageKind,
    Outgoing,
    ReplyBody,
    command_queue,
    new_id,
)
from sagakit.observe import tracing
from sagakit.observe.logs import get_logger
from sagakit.ports import Clock, Delivery, SagaStore, UnitOfWork

_PREVENTED = ReplyBody(
    ok=False, reason="prevented: compensated before it ran", retryable=False
).model_dump_json()

_H = TypeVar("_H", bound="AnyHandler")


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
        #: Seconds a handler may run when its command names no timeout of its own.
        self.handler_timeout = handler_timeout
        self.breakers = {breaker.name: breaker for breaker in breakers}
        self.store = store
        self.clock: Clock = clock or SystemClock()
        self.queue = command_queue(name)
        self.consumer = f"participant:{name}"
        self._handlers: dict[str, Handler] = {}
        self._logger_name = service_log or f"sagakit.participant.{name}"
        self.log = get_logger(self._logger_name, service=name)
        self._calls = HandlerCalls(name, breakers=self.breakers, log=self.log)
        self._lone_slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        self._breakers_loaded = not self.breakers

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
            await unit.set_reply(self.consumer, key, stored_reply(body))
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
            await unit.set_reply(self.consumer, key, stored_reply(body))
        else:
            await unit.forget(self.consumer, key)
        return body

    def note_timeout(self, late: HandlerTimedOut) -> None:
        """The transaction ``late`` cut short has rolled back; when it runs again, the late
        step is answered as a failed attempt without running its handler again."""
        self._calls.note_timeout(late)

    async def _call(self, unit: UnitOfWork, env: Envelope, handler: Handler) -> ReplyBody:
        return await self._calls.call(unit, env, handler, default_timeout=self.handler_timeout)

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


def _retry_later() -> ReplyBody:
    # A claimed key without a reply cannot outlive its transaction; treat it as transient.
    return ReplyBody(ok=False, reason="in progress elsewhere", retryable=True)


# StepContext and its types moved to a module of their own; they stay importable from here.
__all__ = ["Handler", "Participant", "StepContext", "Writer"]
