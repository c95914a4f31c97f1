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

What happens around this lives beside it: a batch's transaction, run again until it
commits, in :mod:`~sagakit.engine.command_batches`; a handler's call under its step's
timeout in :mod:`~sagakit.engine.handler_call`; what the handler gets in
:mod:`~sagakit.engine.step_context`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar

from sagakit.clock import SystemClock
from sagakit.engine.batching import BatchInbox, inbox_key
from sagakit.engine.breakers import CircuitBreaker
from sagakit.engine.command_batches import Command, CommandBatches
from sagakit.engine.handler_call import HandlerCalls, HandlerTimedOut, stored_reply
from sagakit.engine.step_context import Handler, StepContext, Writer
from sagakit.engine.typed_handlers import AnyHandler, as_handler
from sagakit.errors import PoisonMessageError
from sagakit.model.messages import RELEASE, Envelope, MessageKind, ReplyBody, command_queue
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
        self._batches = CommandBatches(self)

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
        ``executemany`` per kind of write) after the last handler. A command alone in
        its batch needs none either: if it fails after writing, the transaction rolls
        back whole and runs again with that outcome, unrun. The batch's inbox
        keys are claimed in one statement and its replies stored in another. If a
        grouped write fails, the batch rolls back and runs again with those sagas'
        writes sent one by one, so the failure lands on its own step.
        """
        commands: list[Command] = []
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
        await self._batches.run(commands, releases, carried)

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
