"""What a chaos run makes on the shared servers, and takes away again.

Its databases, one per store (refused if any exists already: a run never writes over
another's), and its queues, bindings and detours under the run's own prefix. They are
made before any process starts and removed at the end unless asked to keep them; in
between, this is where the run asks whether its queues are empty and how many letters
died.
"""

from __future__ import annotations

from sagakit import open_transport
from sagakit.transports.rabbitmq import RabbitTransport
from sagakit_shop.app import Shop
from sagakit_shop.chaos.config import ChaosConfig
from sagakit_shop.chaos.nemesis import Servers
from sagakit_shop.chaos.wire import declare_detours, detour_names
from sagakit_shop.distributed import create_databases, database_urls, queue_names


class Footprint:
    """One run's databases and queues."""

    def __init__(self, config: ChaosConfig) -> None:
        self.config = config
        self.urls = database_urls(config.db)
        #: The databases this run created (only they are its to drop).
        self.created: list[str] = []
        #: Whether this run declared its queues (only then are they its to delete).
        self.declared = False

    # ------------------------------------------------------------------ making

    async def create_databases(self) -> None:
        await self._refuse_existing()
        self.created = await create_databases(self.config.db)

    async def _refuse_existing(self) -> None:
        import asyncpg

        servers = Servers.local(self.config.db)
        names = [url.rsplit("/", 1)[1] for url in self.urls.values()]
        conn = await asyncpg.connect(servers.pg_admin, timeout=10)
        try:
            found = await conn.fetch(
                "SELECT datname FROM pg_database WHERE datname = ANY($1)", names
            )
        finally:
            await conn.close()
        if found:
            taken = ", ".join(r["datname"] for r in found)
            raise RuntimeError(f"refusing to run over existing databases: {taken}")

    async def declare_topology(self, shop: Shop) -> None:
        """Every queue, binding and detour the run uses exists before any process starts,
        so nothing published early is unroutable."""
        transport = self.transport()
        await transport.start()
        self.declared = True
        try:
            for consumer in shop.components():
                await transport.declare(consumer.queue)
                for pattern in consumer.bindings:
                    await transport.bind(consumer.queue, pattern)
            channel = await transport.connection.channel()
            await declare_detours(transport, channel)
            await channel.close()
        finally:
            await transport.close()

    def transport(self) -> RabbitTransport:
        transport = open_transport(self.config.broker)
        if not isinstance(transport, RabbitTransport):
            raise TypeError("sagakit chaos needs RabbitMQ: give an amqp:// --broker URL")
        return transport

    # ------------------------------------------------------------------ reading

    async def queues_empty(self) -> bool:
        transport = self.transport()
        await transport.start()
        try:
            channel = await transport.topology.get_underlay_channel()
            for name in self._queue_names(transport):
                declared = await channel.queue_declare(name, passive=True)
                if declared.message_count:
                    return False
            return True
        finally:
            await transport.close()

    def _queue_names(self, transport: RabbitTransport) -> list[str]:
        names = [transport.name(d) for d in detour_names()]
        for queue in queue_names(self.config.mode):
            names.append(transport.name(queue))
            names += [
                transport.tier_queue(queue, t) for t in range(1, len(transport.retry_tiers) + 1)
            ]
        return names

    async def dead_letters(self) -> int:
        transport = self.transport()
        await transport.start()
        try:
            return await transport.dead_letters.depth()
        finally:
            await transport.close()

    # ------------------------------------------------------------------ taking away

    async def remove(self) -> None:
        """Drop the databases this run created, and delete its queues if it declared them."""
        await self._drop_databases()
        if self.declared:
            await self._delete_queues()

    async def _drop_databases(self) -> None:
        import asyncpg

        servers = Servers.local(self.config.db)
        conn = await asyncpg.connect(servers.pg_admin, timeout=10)
        try:
            for name in self.created:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    async def _delete_queues(self) -> None:
        transport = self.transport()
        await transport.start()
        try:
            for queue in queue_names(self.config.mode):
                await transport.declare(queue)
            channel = transport.topology
            for name in detour_names():
                await channel.queue_delete(transport.name(name))
                await channel.exchange_delete(transport.name(name))
            await transport.teardown()
        finally:
            await transport.close()
