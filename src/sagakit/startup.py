"""What a runtime checks as it starts: its stores' schemas, and who serves its steps.

A store whose tables are missing or behind the code's migrations stops the start with
the command that fixes it (or is migrated, when the runtime was asked to): otherwise
the relay would retry ``relation "saga_outbox" does not exist`` forever while sagas
stay running. A participant a definition names but nobody serves is only warned
about: it may be served by a process that starts later.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from sagakit.errors import StoreError, TransportError
from sagakit.logs import get_logger
from sagakit.model.definition import participants_of
from sagakit.model.messages import command_queue
from sagakit.stores.migrations import HEAD
from sagakit.transports.memory import MemoryTransport

if TYPE_CHECKING:
    from sagakit.orchestrator import Orchestrator
    from sagakit.ports import SagaStore, Transport

log = get_logger("sagakit.runtime")


def safe_url(store: SagaStore) -> str:
    return str(getattr(store, "url_safe", store.url))


async def schema_problem(store: SagaStore) -> str | None:
    """Why ``store`` cannot be used as it is (no tables, or tables behind), or None."""
    version = getattr(store, "schema_version", None)
    if version is None:
        return None  # a store of another kind: it answers for its own schema
    found = await version()
    if found == HEAD:
        return None
    if found is None:
        return f"{safe_url(store)} has no sagakit tables"
    return f"{safe_url(store)} has sagakit's tables at migration {found}, not {HEAD}"


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


async def warn_unserved(
    orchestrators: Sequence[Orchestrator], served: set[str], transport: Transport
) -> list[str]:
    """Warn about every participant a definition names that nobody serves: none of the
    queues this process consumes (``served``) and, on a broker that can be asked, no
    queue there either. Returns the participants warned about."""
    named: dict[str, set[str]] = {}
    for orchestrator in orchestrators:
        for definition in orchestrator.definitions:
            for participant in participants_of([definition]):
                named.setdefault(participant, set()).add(definition.name)
    unserved = []
    for participant, definitions in sorted(named.items()):
        queue = command_queue(participant)
        if queue in served:
            continue
        reason = await _nobody_serves(transport, queue)
        if reason is None:
            continue
        unserved.append(participant)
        log.warning(
            f"saga definition(s) {', '.join(sorted(definitions))} name participant "
            f"{participant!r}, but {reason}: its commands wait until something serves it"
        )
    return unserved


async def _nobody_serves(transport: Transport, queue: str) -> str | None:
    """Why nobody serves ``queue`` (None: somebody may, or there is no telling)."""
    if isinstance(transport, MemoryTransport):
        if transport.declared(queue):  # another runtime on the same transport serves it
            return None
        return "nothing in this process serves it (in-process transport)"
    from sagakit.transports.rabbitmq import RabbitTransport

    if not isinstance(transport, RabbitTransport):
        return None
    from sagakit.transports.rabbit_namespace import probe

    broker_name = transport.name(queue)
    try:
        missing = await probe(transport.connection, broker_name) is None
    except TransportError as exc:  # a check that cannot be made does not stop the start
        log.info(f"could not look for queue {broker_name!r}: {exc}")
        return None
    if missing:
        return f"the broker has no queue {broker_name!r} (no process has served it yet)"
    return None
