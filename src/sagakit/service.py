"""A runtime run as a service: ``sagakit run``'s loop, its health probes and its metrics.

:func:`serve` starts a runtime, runs it until SIGTERM or SIGINT, then stops it within
its grace: relays settle, consumers take no more messages, running handlers get the
rest of the grace to commit, and what they did not finish goes back to the broker for
another replica (or the next start). On an optional port it serves ``/healthz`` (the
process answers), ``/readyz`` (every store reachable and at the current migration, the
broker connected; 503 with the reasons otherwise) and ``/metrics`` (Prometheus).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sagakit.engine.runtime import Runtime
from sagakit.engine.startup import safe_url, schema_problem
from sagakit.observe.logs import get_logger
from sagakit.observe.metrics import Metrics
from sagakit.stores.sql import SqlSagaStore

if TYPE_CHECKING:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from sagakit.engine.orchestrator import Orchestrator

log = get_logger("sagakit.service")

#: Seconds a readiness probe gives each store and the broker to answer.
_PROBE_TIMEOUT = 2.0


class TargetError(ValueError):
    """``MODULE:ATTR`` does not name a runtime or a factory of one."""


def load_target(spec: str, *, directory: str | None = ".") -> object:
    """The object ``MODULE:ATTR`` names (``ATTR`` may be dotted), importing ``MODULE``
    with ``directory`` first on the import path, as uvicorn's ``--app-dir`` does."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise TargetError(f"{spec!r}: give MODULE:ATTR, e.g. concerts.service:runtime")
    if directory is not None and directory not in sys.path:
        sys.path.insert(0, directory)
    try:
        found: object = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise TargetError(f"{spec!r}: no module named {exc.name!r}") from exc
        raise  # the module is there, but something it imports is not: show where
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError as exc:
            raise TargetError(f"{spec!r}: {module_name} has no attribute {attribute!r}") from exc
    return found


async def runtime_from(target: object, spec: str = "the target") -> Runtime:
    """``target`` if it is a Runtime, else what calling it (with no arguments) returns,
    awaited when it is awaitable: a sync or async factory. Called inside the running
    loop, so what it opens belongs to that loop."""
    if isinstance(target, Runtime):
        return target
    if not callable(target):
        raise TargetError(f"{spec} is a {type(target).__name__}, not a Runtime or a factory")
    made = target()
    if inspect.isawaitable(made):
        made = await made
    if not isinstance(made, Runtime):
        raise TargetError(f"{spec} returned a {type(made).__name__}, not a Runtime")
    return made


# ---------------------------------------------------------------------- health and metrics


def orchestrators_of(runtime: Runtime) -> list[Orchestrator]:
    fused = [engine.orchestrator for engine in runtime.fused.values()]
    return [*runtime.orchestrators, *fused]


def attach_metrics(runtime: Runtime, metrics: Metrics | None = None) -> Metrics:
    """The metrics the service serves: ``metrics``, else an orchestrator's own, else new
    ones; every orchestrator without metrics counts into them from now on."""
    orchestrators = orchestrators_of(runtime)
    chosen = metrics or next((o.metrics for o in orchestrators if o.metrics), None) or Metrics()
    for orchestrator in orchestrators:
        if orchestrator.metrics is None:
            orchestrator.metrics = chosen
    return chosen


async def readiness(runtime: Runtime, *, stopping: bool = False) -> list[str]:
    """Why the service should get no work now (empty when ready)."""
    if stopping:
        return ["the service is stopping"]
    reasons = [] if runtime.running else ["the runtime is not running yet"]
    for store in runtime.stores:
        try:
            problem = await asyncio.wait_for(_store_problem(store), _PROBE_TIMEOUT)
        except Exception as exc:  # unreachable, whatever the driver says
            problem = f"{safe_url(store)} is unreachable: {type(exc).__name__}: {exc}"
        if problem is not None:
            reasons.append(problem)
    if getattr(runtime.transport, "connected", True) is False:
        reasons.append("the broker connection is down (reconnecting)")
    return reasons


async def _store_problem(store: Any) -> str | None:
    if getattr(store, "migrates_itself", False):
        await store.schema_version()  # reachable is all: it makes its own tables
        return None
    return await schema_problem(store)


async def render_metrics(runtime: Runtime, metrics: Metrics) -> bytes:
    """The exposition: gauges read from the stores now, then every family."""
    stores = [s for s in runtime.stores if isinstance(s, SqlSagaStore)]
    dead_letters = runtime.transport.dead_letters
    now = time.time()
    keeper = next((o.store for o in orchestrators_of(runtime)), None)
    if isinstance(keeper, SqlSagaStore):
        await metrics.refresh(keeper, stores=stores, dead_letters=dead_letters, now=now)
    else:
        await metrics.refresh_stores(stores, dead_letters=dead_letters, now=now)
    return metrics.generate()


@dataclass
class ServiceState:
    """What the probes report: the runtime, and whether it is on its way out."""

    runtime: Runtime
    metrics: Metrics
    stopping: bool = False


def health_app(state: ServiceState) -> Starlette:
    """``/healthz``, ``/readyz`` and ``/metrics`` over one service."""
    from prometheus_client import CONTENT_TYPE_LATEST
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(_: Request) -> Response:
        reasons = await readiness(state.runtime, stopping=state.stopping)
        if reasons:
            return JSONResponse({"status": "not ready", "reasons": reasons}, status_code=503)
        return JSONResponse({"status": "ready"})

    async def metrics(_: Request) -> Response:
        try:
            body = await render_metrics(state.runtime, state.metrics)
        except Exception as exc:  # a store down: say so, the scraper records the gap
            reason = f"cannot read the gauges: {type(exc).__name__}: {exc}"
            return JSONResponse({"status": "error", "reason": reason}, status_code=503)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    return Starlette(routes=routes)


def http_server(app: Any, *, host: str, port: int, share_port: bool = False) -> uvicorn.Server:
    """A uvicorn server that leaves the signals to :func:`serve`, which stops the
    runtime first and the servers after. With ``share_port``, replicas of the service on
    one host listen on the same port (SO_REUSEPORT) and the kernel spreads the
    connections over them."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

        async def serve(self, sockets: list[socket.socket] | None = None) -> None:
            if sockets is None and share_port:
                sockets = [_shared_listener(host, port)]
            await super().serve(sockets=sockets)

    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2
    )
    return Server(config)


def _shared_listener(host: str, port: int) -> socket.socket:
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind((host, port))
    listener.listen(2048)
    return listener


# ---------------------------------------------------------------------- the loop


def describe(runtime: Runtime, health: str | None) -> str:
    """One line saying what runs: queues, stores (passwords masked), health address."""
    queues = sorted({c.queue for c in runtime.consumers}) or ["none"]
    fused = sorted(runtime.fused)
    stores = [safe_url(s) for s in runtime.stores] or ["none"]
    parts = [f"queues {', '.join(queues)}"]
    if fused:
        parts.append(f"fused orchestrators {', '.join(fused)}")
    parts.append(f"stores {', '.join(stores)}")
    parts.append(f"relays {len(runtime.stores) if runtime.run_relays else 0}")
    parts.append(f"health {health}" if health else "no health port")
    return "; ".join(parts)


def _on_signal(stop: asyncio.Event, sig: signal.Signals, name: str) -> None:
    """The first SIGTERM or SIGINT stops the service within its grace; a second one, while
    that stop runs, ends the process at once. Nothing is lost either way: what did not
    commit rolls back when its connection closes, and unacknowledged messages go back to
    their queues for another replica."""
    if not stop.is_set():
        stop.set()
        return
    log.warning(f"{name}: {sig.name} again while stopping; exiting now, without the grace")
    logging.shutdown()
    os._exit(128 + sig.value)


async def serve(
    runtime: Runtime,
    *,
    grace: float = 10.0,
    health: tuple[str, int] | None = None,
    metrics: Metrics | None = None,
    alongside: Sequence[uvicorn.Server] = (),
    stop: asyncio.Event | None = None,
    name: str = "service",
) -> None:
    """Run ``runtime`` until SIGTERM or SIGINT (or ``stop``), then stop it within
    ``grace`` seconds. With ``health`` (host, port), serve the probes and metrics there
    from before the start (``/readyz`` says 503 until the runtime runs) until after the
    stop. ``alongside`` servers (an HTTP API of the service) stop taking requests first."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _on_signal, stop, sig, name)
    state = ServiceState(runtime, attach_metrics(runtime, metrics))
    # Bound here, so a port in use is an error now, not a server's exit later.
    listener = socket.create_server(health) if health else None
    probes = http_server(health_app(state), host=health[0], port=health[1]) if health else None
    serving: list[asyncio.Task[None]] = []
    if probes is not None and listener is not None:
        serving.append(asyncio.create_task(probes.serve(sockets=[listener])))
    servers = [*alongside, *([probes] if probes else [])]
    try:
        await runtime.start()
        # Requests only once the queues exist and the consumers run: an event published
        # before a queue is bound to it would reach only the queues bound already.
        serving += [asyncio.create_task(server.serve()) for server in alongside]
        where = f"http://{health[0]}:{health[1]}" if health else None
        log.info(f"{name} is up: {describe(runtime, where)}")
        ended = asyncio.create_task(stop.wait())
        await asyncio.wait({ended, *serving}, return_when=asyncio.FIRST_COMPLETED)
        ended.cancel()
        state.stopping = True
        log.info(f"{name} is stopping (grace {grace:g}s)")
        for server in alongside:  # no new requests while the runtime winds down
            server.should_exit = True
        await runtime.stop(grace=grace)
    finally:
        state.stopping = True
        for server in servers:
            server.should_exit = True
        await asyncio.gather(*serving, return_exceptions=True)
        if listener is not None:
            listener.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info(f"{name} stopped")
