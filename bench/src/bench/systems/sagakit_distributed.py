"""sagakit distributed: the orchestrator, the relay and each participant in a process of
its own, over RabbitMQ, all on this system's PostgreSQL database.

``python -m bench.systems.sagakit_distributed ROLE --db URL --broker URL`` runs one
process until SIGTERM. The driver (in the bench worker) starts sagas by writing them to
the store, as any service would, and watches the projection for their ends.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from bench import workload
from bench.systems.sagakit_app import ORDER, PARTICIPANTS, participants
from sagakit import Orchestrator, Runtime, open_transport
from sagakit.engine.publisher import OutboxPublisher
from sagakit.model.messages import command_queue, reply_queue
from sagakit.stores.postgres import PostgresSagaStore

ROLES = ("orchestrator", "relay", *PARTICIPANTS)
#: Connections per process: six processes must share the server with the other systems.
POOL = 3
#: How long a driver waits for one saga to end before the run counts it an error.
_PATIENCE = 600.0
_OUTCOMES = {"completed": "approved", "compensated": "rejected"}


def broker_url(amqp: str, prefix: str) -> str:
    """``amqp`` with this run's queue prefix and two short retry tiers."""
    parts = urlsplit(amqp)
    query = [*parse_qsl(parts.query), ("prefix", prefix), ("retry_tiers", "1,5")]
    return urlunsplit(parts._replace(query=urlencode(query)))


def queues() -> list[str]:
    return [reply_queue("orchestrator"), *(command_queue(p) for p in PARTICIPANTS)]


async def check_broker(broker: str) -> None:
    transport = open_transport(broker)
    await transport.start()
    await transport.close()


async def teardown(broker: str) -> None:
    """Delete every queue (and retry tier, and the events exchange) this run declared."""
    from sagakit.transports.rabbitmq import RabbitTransport

    transport = open_transport(broker)
    assert isinstance(transport, RabbitTransport)
    await transport.start()
    for queue in queues():
        await transport.declare(queue)
    await transport.teardown()
    await transport.close()


async def serve(role: str, db: str, broker: str, ready: Path | None) -> None:
    store = PostgresSagaStore(db, pool_size=POOL)
    await store.migrate()
    transport = open_transport(broker)
    if role == "relay":
        runtime = Runtime(transport).relay(store)
    elif role == "orchestrator":
        runtime = Runtime(transport, relays=False).add(Orchestrator(store, [ORDER]))
    else:
        runtime = Runtime(transport, relays=False).add(*participants(store, [role]))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with runtime:
        if ready is not None:
            ready.write_text("up")
        await stop.wait()
    await store.close()


class DriverHarness:
    """Starts sagas in the store and publishes their first commands on commit, as a
    service starting sagas would (the relay process takes what it left), and waits for
    their ends as any client would (``wait_ended``: the orchestrator's process announces
    them, so nothing polls the projection but a backstop); the quiesce polls are left
    out of commits per saga."""

    def __init__(self, db: str, options: dict[str, Any]) -> None:
        self.url = db
        self.broker = str(options["broker"])
        self.observer_transactions = 0
        self.publisher: OutboxPublisher | None = None

    async def open(self, *, recover: bool) -> None:
        self.store = PostgresSagaStore(self.url, pool_size=POOL)
        self.orchestrator = Orchestrator(self.store, [ORDER])
        self.transport = open_transport(self.broker)
        await self.transport.start()
        self.publisher = OutboxPublisher(self.store, self.transport)
        self.publisher.attach()

    async def submit(self, order: workload.Order) -> str:
        saga_id = str(order.id)
        await self.orchestrator.start(ORDER.name, order.as_dict(), saga_id=saga_id)
        ended = await self.store.wait_ended([saga_id], timeout=_PATIENCE)
        return _OUTCOMES.get(ended[saga_id], ended[saga_id])

    async def quiesce(self, timeout: float) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            counts = await self.store.count_by_status()
            self.observer_transactions += 1
            left = counts.get("running", 0) + counts.get("compensating", 0)
            if left == 0 or loop.time() > deadline:
                return int(left)
            await asyncio.sleep(0.2)

    async def close(self) -> None:
        if self.publisher is not None:
            await self.publisher.close(2.0)
            await self.transport.close()
        await self.store.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.systems.sagakit_distributed")
    parser.add_argument("role", choices=ROLES)
    parser.add_argument("--db", required=True)
    parser.add_argument("--broker", required=True)
    parser.add_argument("--ready", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("sagakit").setLevel(logging.ERROR)
    asyncio.run(serve(args.role, args.db, args.broker, args.ready))


if __name__ == "__main__":
    main()
