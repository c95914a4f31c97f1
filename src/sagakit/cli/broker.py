"""``sagakit broker``: look after the queues and exchange a prefix owns on RabbitMQ."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Annotated

import typer

from sagakit.cli.app import JsonOption, app, console, emit_json, fail
from sagakit.model.definition import SagaDefinition
from sagakit.observe.redaction import mask_urls

broker = typer.Typer(
    help="Look after a namespace (a prefix) on the RabbitMQ broker.", no_args_is_help=True
)
app.add_typer(broker, name="broker")

BrokerUrlOption = Annotated[
    str,
    typer.Option("--broker", envvar="SAGAKIT_BROKER", help="RabbitMQ URL (amqp://...)."),
]


async def _system(specs: Iterable[str]) -> tuple[list[SagaDefinition], list[str]]:
    """The definitions and queues the ``MODULE:ATTR`` objects name: definitions, lists of
    them, a Runtime, or a factory of one."""
    from sagakit.engine.runtime import Runtime
    from sagakit.service import load_target, orchestrators_of, runtime_from

    definitions: list[SagaDefinition] = []
    queues: list[str] = []
    for spec in specs:
        found = load_target(spec)
        if isinstance(found, SagaDefinition):
            definitions.append(found)
            continue
        if isinstance(found, list | tuple) and all(isinstance(d, SagaDefinition) for d in found):
            definitions.extend(found)
            continue
        runtime = await runtime_from(found, spec)
        if isinstance(runtime, Runtime):
            queues += [consumer.queue for consumer in runtime.consumers]
            for orchestrator in orchestrators_of(runtime):
                definitions += orchestrator.definitions
            for store in runtime.stores:  # opened by the factory; nothing else will use them
                await store.close()
    return definitions, queues


@broker.command("teardown")
def teardown(
    prefix: Annotated[
        str, typer.Option(help="The namespace: the prefix before every queue and exchange name.")
    ],
    url: BrokerUrlOption = "amqp://guest:guest@127.0.0.1:5672/%2F",
    definitions: Annotated[
        list[str] | None,
        typer.Option(
            "--definitions",
            help="MODULE:ATTR of a saga definition, a list of them, a Runtime or its factory: "
            "whose participants' queues to look for (repeatable).",
        ),
    ] = None,
    group: Annotated[
        list[str] | None,
        typer.Option(help="Orchestrator groups whose reply queues to look for (repeatable)."),
    ] = None,
    queue: Annotated[
        list[str] | None,
        typer.Option(help="Other queues to look for, by name before the prefix (repeatable)."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Remove them even while consumers are attached.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only list what would be removed.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """List and remove a namespace's queues (their messages too) and its exchange.

    Names come from the definitions (each participant's command and choreography queues
    and their delay tiers), the orchestrator groups, the tracker and the dead-letter
    queue; each is asked about by a passive declare, so the management plugin is not
    needed. Refuses while any of them has consumers, unless --force."""
    from sagakit.errors import SagaError
    from sagakit.transports import open_transport
    from sagakit.transports.rabbit_namespace import (
        Namespace,
        connected,
        remove,
        survey,
        work_queues,
    )
    from sagakit.transports.rabbitmq import RabbitTransport

    shown_url = mask_urls(url)
    transport = open_transport(url)
    if not isinstance(transport, RabbitTransport):
        raise fail(f"{shown_url} is not a RabbitMQ URL (amqp://...)", 2)
    transport.prefix = prefix

    async def go() -> tuple[Namespace, bool]:
        defined, queues = await _system(definitions or [])
        extra = [*queues, *(queue or [])]
        names = work_queues(defined, groups=group or ["orchestrator"], queues=extra)
        async with connected(transport) as connection:
            namespace = await survey(connection, transport, names)
            busy = namespace.consumers > 0 and not force
            if not (busy or dry_run or namespace.empty):
                await remove(connection, namespace)
            return namespace, busy

    try:
        namespace, busy = asyncio.run(go())
    except (SagaError, ValueError) as exc:
        raise fail(f"{shown_url}: {exc}") from exc
    removed = not (busy or dry_run or namespace.empty)
    if as_json:
        emit_json(
            {
                "broker": shown_url,
                "prefix": prefix,
                "queues": [
                    {"name": q.name, "messages": q.messages, "consumers": q.consumers}
                    for q in namespace.queues
                ],
                "exchange": namespace.exchange,
                "removed": removed,
            }
        )
    else:
        _report(namespace, shown_url, removed=removed)
    if busy:
        raise fail(
            f"{namespace.consumers} consumer(s) attached under prefix {prefix!r} on "
            f"{shown_url}: stop those processes first, or give --force"
        )


def _report(namespace: object, shown_url: str, *, removed: bool) -> None:
    from sagakit.transports.rabbit_namespace import Namespace

    assert isinstance(namespace, Namespace)
    if namespace.empty:
        console.print(f"nothing under prefix {namespace.prefix!r} on {shown_url}", soft_wrap=True)
        return
    verb = "removed" if removed else "found"
    for queue in namespace.queues:
        console.print(
            f"{verb} queue {queue.name} ({queue.messages} messages, {queue.consumers} consumers)",
            soft_wrap=True,
            markup=False,
        )
    if namespace.exchange is not None:
        console.print(f"{verb} exchange {namespace.exchange}", soft_wrap=True, markup=False)
