"""What a runtime checks as it starts: its stores' schemas, and who serves its steps.

A store whose tables are missing or behind the code's migrations stops the start with
the command that fixes it (or is migrated, when the runtime was asked to): otherwise
the relay would retry ``relation "saga_outbox" does not exist`` forever while sagas
stay running. A participant a definition names but nobody serves is only warned
about: it may be served by a process that starts later.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, cast

from sagakit.errors import StoreError, TransportError
from sagakit.model.definition import participants_of
from sagakit.model.messages import command_queue
from sagakit.observe.logs import get_logger

if TYPE_CHECKING:
    from sagakit.ports import SagaStore, Transport

log = get_logger("sagakit.runtime")


def safe_url(store: SagaStore) -> str:
    return str(getattr(store, "url_safe", store.url))


async def schema_problem(store: SagaStore) -> str | None:
    """Why ``store`` cannot be used as it is (no tables, or tables behind), or None. A
    store answers for its own schema (``schema_problem()``); one that cannot say passes."""
    problem = getattr(store, "schema_problem", None)
    return None if problem is None else cast("str | None", await problem())


async def check_stores(stores: Iterable[SagaStore], *, migrate: bool) -> None:
    """Migrate the stores (``migrate``), or refuse, naming the fix, any that is not at
    the code's migration. A store that migrates itself on first use passes."""
    for store in stores:
        if migrate:
            await store.migrate()
            log.info(f"migrated {safe_url(store)}")
            continue
        if getattr(store, "migrates_itself", False):
            continue
        problem = await schema_problem(store)
        if problem is not None:
            raise StoreError(
                f"{problem}; run `sagakit migrate --db {safe_url(store)}` first "
                "(or start with migrate: `sagakit run --migrate`, Runtime(migrate=True))"
            )


def awaited_queues(consumers: Iterable[object]) -> dict[str, tuple[str, set[str]]]:
    """The queue each participant named by these consumers' definitions must be served
    on, with the participant and the definitions that name it.

    An orchestrator sends its participants commands; a choreography's participants
    follow its events instead, so a tracker (which knows every choreographed definition)
    or a choreographed participant (which knows those it takes part in) names the
    participants that must follow them."""
    from sagakit.engine.choreography import ChoreographedParticipant, Tracker, follower_queue
    from sagakit.engine.orchestrator import Orchestrator

    awaited: dict[str, tuple[str, set[str]]] = {}
    for consumer in consumers:
        if isinstance(consumer, Orchestrator):
            definitions, queue_of = consumer.definitions, command_queue
        elif isinstance(consumer, Tracker | ChoreographedParticipant):
            definitions, queue_of = consumer.definitions, follower_queue
        else:
            continue
        for definition in definitions:
            for participant in participants_of([definition]):
                queue = queue_of(participant)
                awaited.setdefault(queue, (participant, set()))[1].add(definition.name)
    return awaited


async def warn_unserved(
    consumers: Sequence[object], served: set[str], transport: Transport
) -> list[str]:
    """Warn about every participant a definition names that nobody serves: none of the
    queues this process consumes (``served``) and, on a broker that can be asked, no
    queue there either. Returns the participants warned about."""
    unserved = []
    for queue, (participant, definitions) in sorted(awaited_queues(consumers).items()):
        if queue in served:
            continue
        reason = await _nobody_serves(transport, queue)
        if reason is None:
            continue
        unserved.append(participant)
        waiting = "commands wait" if queue == command_queue(participant) else "events wait"
        log.warning(
            f"saga definition(s) {', '.join(sorted(definitions))} name participant "
            f"{participant!r}, but {reason}: its {waiting} until something serves it"
        )
    return unserved


async def _nobody_serves(transport: Transport, queue: str) -> str | None:
    """Why nobody serves ``queue`` (None: somebody may, or there is no telling). A
    transport that can tell says so (``nobody_serves(queue)``); a check that cannot be
    made does not stop the start."""
    check = getattr(transport, "nobody_serves", None)
    if check is None:
        return None
    try:
        return cast("str | None", await check(queue))
    except TransportError as exc:
        log.info(f"could not look for the queue of {queue!r}: {exc}")
        return None
