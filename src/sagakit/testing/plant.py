"""Planted bugs: switch off one of sagakit's guarantees in a running process, on purpose.

A checker that never fails proves nothing. Each plant here breaks one guarantee the way
a careless implementation would, so a fault-injection run can show that its checks
catch it (``sagakit chaos --plant NAME``). Nothing in the library imports this module;
a process is planted only when its entry point asks, and only the objects handed in
are changed (their classes, and every other instance, keep the real behaviour).

- ``no-inbox``: participants stop deduplicating. Every delivery of a command runs its
  handler again, and a compensation no longer checks whether its action ran.
- ``publish-before-commit``: messages skip the outbox. Each is handed to the broker the
  moment it is written, before its transaction commits and without waiting for the
  broker's confirm (a dual write): a rollback leaves a message for a change that never
  happened, and a broker that is down loses the message of a change that did.
- ``no-barrier``: the inbox still drops duplicates, but a compensation no longer claims
  its action's key: a compensation for an action that never ran runs its handler
  anyway, and an action arriving after its compensation runs too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

from sagakit.engine.batching import BatchInbox, inbox_key
from sagakit.engine.participant import Handler, Participant
from sagakit.model.messages import Envelope, Outgoing, ReplyBody, TransportMessage
from sagakit.observe.logs import get_logger
from sagakit.ports import Transport, UnitOfWork
from sagakit.stores.sql import SqlSagaStore
from sagakit.stores.unit import SqlUnit

log = get_logger("sagakit.testing.plant")

PLANTS: tuple[str, ...] = ("no-inbox", "publish-before-commit", "no-barrier")


def plant_no_inbox(participant: Participant) -> None:
    """Run every command delivery, duplicates included; store no outcome."""

    async def execute(unit: UnitOfWork, command: Envelope, handler: Handler) -> ReplyBody:
        return await participant._call(unit, command, handler)

    async def preclaim(inbox: BatchInbox, commands: Sequence[Envelope]) -> None:
        """No keys claimed up front for a batch either: nothing would ask for them, and a
        batch that claimed keys nobody used refuses to commit (BatchInbox.check_used)."""

    # Patching one instance is the point: the class and every other participant stay sound.
    participant.execute = execute  # type: ignore[method-assign]
    participant._preclaim = preclaim  # type: ignore[method-assign]
    log.warning(f"PLANTED BUG no-inbox in participant {participant.name}")


def plant_no_barrier(participant: Participant) -> None:
    """Compensations run their handler without claiming (or checking) the action's key."""
    consumer = participant.consumer

    async def compensate(unit: UnitOfWork, env: Envelope, handler: Handler, key: str) -> ReplyBody:
        body = await participant._call(unit, env, handler)
        if body.ok:
            await unit.set_reply(consumer, key, body.model_dump_json())
        else:
            await unit.forget(consumer, key)
            body = body.model_copy(update={"retryable": True})
        return body

    async def preclaim(inbox: BatchInbox, commands: Sequence[Envelope]) -> None:
        # Only each command's own key: nothing here will ask for an action's key.
        await inbox.preclaim(consumer, [inbox_key(env, env.op) for env in commands])

    participant._compensate = compensate  # type: ignore[method-assign]
    participant._preclaim = preclaim  # type: ignore[method-assign]
    log.warning(f"PLANTED BUG no-barrier in participant {participant.name}")


def plant_publish_before_commit(store: SqlSagaStore, transport: Transport) -> None:
    """Every message written in one of ``store``'s transactions goes straight to
    ``transport`` instead of the outbox, before the transaction commits."""
    opened = store.unit
    pending: set[asyncio.Task[None]] = set()

    async def send(messages: list[TransportMessage]) -> None:
        try:
            await transport.publish(messages)
        except Exception as exc:  # a dual write has nowhere to keep what it could not send
            log.warning(f"planted publish-before-commit lost {len(messages)} message(s): {exc}")

    def enqueue_now(unit: SqlUnit) -> None:
        # Where a unit turns messages into outbox rows, it sends them instead.
        def outbox_rows(messages: Sequence[Outgoing]) -> list[dict[str, Any]]:
            if messages:
                task = asyncio.create_task(send([TransportMessage.of(m) for m in messages]))
                pending.add(task)
                task.add_done_callback(pending.discard)
            return []

        unit._outbox_rows = outbox_rows  # type: ignore[method-assign]

    @contextlib.asynccontextmanager
    async def unit() -> AsyncIterator[SqlUnit]:
        async with opened() as real:
            enqueue_now(real)
            yield real

    store.unit = unit  # type: ignore[method-assign]
    log.warning(f"PLANTED BUG publish-before-commit in store {store.url_safe}")


def plant(
    name: str,
    *,
    participants: Iterable[Participant] = (),
    stores: Iterable[SqlSagaStore] = (),
    transport: Transport | None = None,
) -> None:
    """Install the bug ``name`` (one of :data:`PLANTS`) into these objects."""
    if name == "no-inbox":
        for participant in participants:
            plant_no_inbox(participant)
    elif name == "no-barrier":
        for participant in participants:
            plant_no_barrier(participant)
    elif name == "publish-before-commit":
        if transport is None:
            raise ValueError("publish-before-commit needs the transport to publish on")
        for store in stores:
            plant_publish_before_commit(store, transport)
    else:
        raise ValueError(f"unknown plant {name!r}; choose from {', '.join(PLANTS)}")


__all__ = [
    "PLANTS",
    "plant",
    "plant_no_barrier",
    "plant_no_inbox",
    "plant_publish_before_commit",
]
