"""The shop distributed: one PostgreSQL database and one OS process per service.

``sagakit up`` prepares the databases, then starts and supervises a process for each
service, one for the orchestrator (or the choreography tracker) and one for the relay
that publishes every store's outbox to RabbitMQ; a process that dies is started again.
``sagakit service NAME`` is one of those processes. Scaling out is more processes of a
kind against the same PostgreSQL and RabbitMQ: they coordinate through the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from sqlalchemy.engine import make_url

from sagakit import Runtime, open_store, open_transport
from sagakit.engine.choreography import follower_queue, tracker_queue
from sagakit.model.messages import command_queue, reply_queue
from sagakit.observe.logs import get_logger
from sagakit.service import http_server, serve
from sagakit_shop.app import SAGA, STORE_NAMES, Mode, Shop
from sagakit_shop.outside import OutsideSystems
from sagakit_shop.world import default_world

if TYPE_CHECKING:
    import uvicorn

    from sagakit.ports import Transport
    from sagakit_shop.chaos.wire import ServiceChaos

log = get_logger("shop.up", service="up")

#: Every process `sagakit up` runs: the saga keeper, the five services, the relay.
PROCESSES: tuple[str, ...] = (
    SAGA,
    "order",
    "inventory",
    "payment",
    "shipping",
    "notification",
    "relay",
)

#: Set by the supervisor in every child's environment: the child dies with it.
PARENT_ENV = "SAGAKIT_PARENT_PID"


def database_urls(base: str) -> dict[str, str]:
    """One database per store, named after the base URL's: ``shop`` -> ``shop_order``..."""
    url = make_url(base)
    stem = url.database or "shop"
    return {
        name: url.set(database=f"{stem}_{name}").render_as_string(hide_password=False)
        for name in STORE_NAMES
    }


async def create_databases(base: str) -> list[str]:
    """Create the stores' databases that do not exist yet; return the ones created."""
    import asyncpg

    url = make_url(base)
    # The store URL's query (a pool's size) is for the stores, not this one connection.
    admin = url.set(drivername="postgresql", database="postgres", query={}).render_as_string(
        hide_password=False
    )
    created = []
    conn = await asyncpg.connect(admin)
    try:
        for target in database_urls(base).values():
            name = make_url(target).database
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{name}"')
                created.append(str(name))
    finally:
        await conn.close()
    return created


async def prepare(base: str, *, orders_hint: int = 1000) -> list[str]:
    """Databases, migrations, tables and the starting world: whatever is missing. Returns
    the names of the databases it created."""
    created = await create_databases(base)
    shop = Shop({name: open_store(url) for name, url in database_urls(base).items()})
    try:
        for store in shop.stores.values():
            await store.migrate()
        for service in shop.services.values():
            if not await service.is_seeded():
                await service.install(default_world(orders=orders_hint))
    finally:
        await shop.close()
    return created


async def run_service(
    name: str,
    *,
    db: str,
    broker: str,
    mode: Mode,
    host: str = "127.0.0.1",
    port: int = 8000,
    fail_rate: float = 0.0,
    seed: int = 0,
    chaos: ServiceChaos | None = None,
    gateway_url: str | None = None,
    carrier_url: str | None = None,
    metrics_port: int | None = None,
    grace: float = 2.0,
    share_port: bool = False,
) -> None:
    """Run one process of the distributed shop until SIGTERM or SIGINT, then stop within
    ``grace`` seconds: :func:`sagakit.service.serve`, as ``sagakit run`` does.

    ``chaos`` (by default read from the environment, where ``sagakit chaos`` puts it for
    its children) injects wire faults or plants a bug: test tooling, off unless asked.
    Payment and shipping call the gateway and the carrier at the URLs given (in-process
    ones otherwise). With ``metrics_port``, the orchestrator's counters and histograms
    (sagas started and finished, step latencies) are served for Prometheus at
    ``/metrics`` there (they live in the process that decides), with ``/healthz`` and
    ``/readyz``. With ``share_port``, the order API listens on a port its replicas share.
    """
    if name not in PROCESSES:
        raise ValueError(f"unknown process {name!r}; choose from {', '.join(PROCESSES)}")
    _exit_with_parent()
    chaos = chaos or _chaos_from_env()
    urls = database_urls(db)
    wanted = list(STORE_NAMES) if name == "relay" else [name]
    outside = OutsideSystems.connect(gateway_url=gateway_url, carrier_url=carrier_url, seed=seed)
    stores = {n: open_store(urls[n]) for n in wanted}
    shop = Shop(stores, mode=mode, fail_rate=fail_rate, seed=seed, outside=outside)
    transport = open_transport(broker)
    if chaos is not None:
        transport = _with_chaos(chaos, name, shop, transport)
    if name == "relay":
        runtime = Runtime(transport).relay(*shop.stores.values())
    else:
        runtime = Runtime(transport, relays=False).add(*shop.components([name]))
    # The entry point of every sagakit service (`sagakit run`): signals, a bounded
    # stop, and on the metrics port the health probes next to /metrics.
    health = (host, metrics_port) if metrics_port is not None else None
    api = _api(shop, host, port, share_port=share_port) if name == "order" else None
    try:
        await serve(
            runtime,
            grace=grace,
            health=health,
            metrics=shop.metrics if shop.orchestrator is not None else None,
            alongside=[api] if api is not None else [],
            name=f"{name} ({mode})",
        )
    finally:
        await shop.close()


def _chaos_from_env() -> ServiceChaos | None:
    from sagakit_shop.chaos.wire import CHAOS_ENV, ServiceChaos

    value = os.environ.get(CHAOS_ENV)
    return ServiceChaos.from_env(value) if value else None


def _with_chaos(chaos: ServiceChaos, name: str, shop: Shop, transport: Transport) -> Transport:
    """The transport with the asked-for wire faults, and the planted bug installed."""
    from sagakit.testing.plant import plant
    from sagakit_shop.chaos.wire import wrap

    faulty: Transport = wrap(transport, name, chaos)
    if chaos.plant and name != "relay":
        participants = [service.participant for service in shop.services.values()]
        plant(chaos.plant, participants=participants, stores=shop.stores.values(), transport=faulty)
    return faulty


def _exit_with_parent() -> None:
    """Under a supervisor that asked for it, die when it dies (even by SIGKILL), so a
    killed supervisor never leaves its services running."""
    parent = os.environ.get(PARENT_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != int(parent):  # it died before we asked
        os._exit(1)


def _api(shop: Shop, host: str, port: int, *, share_port: bool = False) -> uvicorn.Server:
    from sagakit.api.guard import max_body_from
    from sagakit_shop.api import MAX_BODY, create_app

    app = create_app(shop, max_body=max_body_from(os.environ, MAX_BODY))
    return http_server(app, host=host, port=port, share_port=share_port)


@dataclass
class Child:
    name: str
    argv: list[str]
    #: The child's environment (this process's when None); the supervisor adds PARENT_ENV.
    env: dict[str, str] | None = None
    #: Where the child's stdout and stderr go (inherited when None).
    output: IO[Any] | None = None
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)

    async def spawn(self) -> asyncio.subprocess.Process:
        env = {**(self.env if self.env is not None else os.environ), PARENT_ENV: str(os.getpid())}
        self.process = await asyncio.create_subprocess_exec(
            *self.argv,
            env=env,
            stdout=self.output,
            stderr=asyncio.subprocess.STDOUT if self.output is not None else None,
        )
        self.started_at = time.monotonic()
        return self.process


async def supervise(
    children: Sequence[Child], *, stop: asyncio.Event, backoff: float = 1.0
) -> None:
    """Start every child, start again any that dies, stop them all when ``stop`` is set."""

    async def keep(child: Child) -> None:
        while not stop.is_set():
            process = await child.spawn()
            waiter = asyncio.create_task(process.wait())
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if stop.is_set():
                waiter.cancel()
                return
            code = process.returncode
            child.restarts += 1
            log.warning(f"{child.name} exited with {code}; starting it again")
            # A child that dies at once is not helped by being restarted in a hot loop.
            if time.monotonic() - child.started_at < backoff:
                await asyncio.sleep(backoff)

    keepers = [asyncio.create_task(keep(child)) for child in children]
    await stop.wait()
    for child in children:
        if child.process is not None and child.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.process.terminate()
    for child in children:
        if child.process is not None and child.process.returncode is None:
            try:
                await asyncio.wait_for(child.process.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    child.process.kill()
    for keeper in keepers:
        keeper.cancel()
    await asyncio.gather(*keepers, return_exceptions=True)


def replica_names(replicas: int) -> list[tuple[str, str]]:
    """Every process of ``replicas`` of each kind, as (name, kind): ``payment`` for the
    first of a kind, ``payment-2``... for the others."""
    return [
        (kind if replica == 1 else f"{kind}-{replica}", kind)
        for replica in range(1, replicas + 1)
        for kind in PROCESSES
    ]


def queue_names(mode: Mode) -> list[str]:
    """Every queue the distributed shop consumes in ``mode`` (before any prefix)."""
    services = [name for name in STORE_NAMES if name != SAGA]
    if mode == "orchestration":
        return [reply_queue("orchestrator"), *(command_queue(name) for name in services)]
    return [tracker_queue(), *(follower_queue(name) for name in services)]


def child_argv(
    name: str,
    *,
    db: str,
    broker: str,
    mode: str,
    port: int,
    fail_rate: float,
    seed: int,
    metrics_port: int | None = None,
    share_port: bool = False,
) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "sagakit",
        "service",
        name,
        "--db",
        db,
        "--broker",
        broker,
        "--mode",
        mode,
        "--fail-rate",
        str(fail_rate),
        "--seed",
        str(seed),
    ]
    if name == "order":
        argv += ["--port", str(port)] + (["--share-port"] if share_port else [])
    if name == SAGA and metrics_port is not None and mode == "orchestration":
        argv += ["--metrics-port", str(metrics_port)]
    return argv
