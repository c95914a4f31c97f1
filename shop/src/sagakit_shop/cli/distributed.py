"""The distributed shop's commands: ``sagakit up`` starts a process per service (and the
outside systems it calls), watches them and serves the dashboard; ``sagakit service`` is
one of those processes."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sagakit.cli import console, fail
from sagakit_shop.app import LOGS, hide_personal_data
from sagakit_shop.cli.dashboard import (
    AdminPortOption,
    ShowTokensOption,
    dashboard_port,
    dashboard_tokens,
    print_dashboard,
    trace_ids_for_the_dashboard,
)
from sagakit_shop.cli.options import (
    DEFAULT_BROKER,
    DEFAULT_PG,
    BaseDbOption,
    BrokerOption,
    ModeOption,
    OrderApiPortOption,
    check_mode,
    check_postgres,
)

if TYPE_CHECKING:
    from sagakit.api import Token


def gateway_books_for(db: str, chosen: Path | None, created: list[str]) -> Path:
    """Where `sagakit up` has the payment gateway keep its authorizations (``chosen``, or
    one file per database stem, as the shop's own databases are), started over when
    ``up`` has just created the order database: orders are numbered from 1 again there,
    and their keys (order-1/charge, ...) would meet an earlier run's authorizations."""
    from sqlalchemy.engine import make_url

    stem = make_url(db).database or "shop"
    books = chosen or Path(".sagakit") / f"gateway-{stem}.db"
    if f"{stem}_order" in created and books.exists():
        for suffix in ("", "-wal", "-shm"):
            Path(f"{books}{suffix}").unlink(missing_ok=True)
        console.print(f"new order database: the gateway's books {books} start over")
    return books


def up(
    db: BaseDbOption = DEFAULT_PG,
    broker: BrokerOption = DEFAULT_BROKER,
    mode: ModeOption = "orchestration",
    port: OrderApiPortOption = 8000,
    admin_port: AdminPortOption = None,
    fail_rate: Annotated[float, typer.Option(min=0.0, max=1.0, help="Mail server trouble.")] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed for the trouble.")] = 7,
    gateway_port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Port of the payment gateway (default: --port + 2)."),
    ] = None,
    carrier_port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Port of the carrier (default: --port + 3)."),
    ] = None,
    gateway_books: Annotated[
        Path | None,
        typer.Option(
            help="The SQLite file the payment gateway keeps its authorizations in, so that "
            "a restarted gateway still knows the idempotency keys it answered "
            "(default: .sagakit/gateway-STEM.db, STEM being --db's database name)."
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            help="Port of the orchestrator's Prometheus metrics (default: --port + 4).",
        ),
    ] = None,
    replicas: Annotated[
        int,
        typer.Option(
            min=1,
            max=8,
            help="Processes of each service, of the orchestrator and of the relay: they "
            "share the work; the order API's replicas share its port.",
        ),
    ] = 1,
    show_tokens: ShowTokensOption = False,
) -> None:
    """Run the shop distributed: a process per service, orchestrator and relay (or
    --replicas of each), and the payment gateway and carrier it calls, restarted if they
    die; the dashboard and admin API run in this process.

    Tokens come from SAGAKIT_TOKENS, or are made up for this run and written to
    .sagakit/tokens (mode 0600). Ctrl-C stops them all."""
    from sagakit import SagaError
    from sagakit.observe.logs import configure
    from sagakit_shop.distributed import Child, child_argv, prepare, replica_names, supervise
    from sagakit_shop.outside import outside_ports

    check_mode(mode)
    check_postgres(db)
    tokens, where_tokens = dashboard_tokens(Path(".sagakit/tokens"))
    admin_at = dashboard_port(port, admin_port)
    try:  # bound now, so a port in use stops us before any service starts
        listener = socket.create_server(("127.0.0.1", admin_at))
    except OSError as exc:
        raise fail(f"cannot serve the dashboard on port {admin_at}: {exc}") from exc
    configure("story", also=LOGS)
    hide_personal_data()
    try:
        created = asyncio.run(prepare(db))
    except (OSError, SagaError) as exc:
        raise fail(f"cannot prepare the databases: {exc}") from exc
    gateway_books = gateway_books_for(db, gateway_books, created)
    ports = outside_ports(port)
    ports.update({k: v for k, v in (("gateway", gateway_port), ("carrier", carrier_port)) if v})
    where = {name: f"http://127.0.0.1:{at}" for name, at in ports.items()}
    calls_out = ["--gateway-url", where["gateway"], "--carrier-url", where["carrier"]]
    scraped_at = metrics_port or port + 4
    children = [
        Child(
            name,
            child_argv(
                kind,
                db=db,
                broker=broker,
                mode=mode,
                port=port,
                fail_rate=fail_rate,
                seed=seed,
                metrics_port=scraped_at if name == kind else None,
                share_port=replicas > 1,
            )
            + (calls_out if kind in {"payment", "shipping"} else []),
        )
        for name, kind in replica_names(replicas)
    ]
    children += [
        Child(
            name,
            [sys.executable, "-m", "sagakit", "service", name, "--port", str(at)]
            + (["--books", str(gateway_books)] if name == "gateway" else []),
        )
        for name, at in ports.items()
    ]
    console.print(f"[bold]order API[/] at http://127.0.0.1:{port}/docs   ({mode})")
    console.print(
        f"place an order: [bold]sagakit order place --customer c-ada --sku lamp --api http://127.0.0.1:{port}[/]"
    )
    console.print(f"check the books: [bold]sagakit verify --db {db}[/]")
    for name, url in where.items():
        console.print(f"{name} at {url}/docs; trouble: PUT {url}/trouble", soft_wrap=True)
    if mode == "orchestration":
        console.print(
            f"orchestrator metrics (sagas started and finished, step latencies) at "
            f"http://127.0.0.1:{scraped_at}/metrics; the admin API's /metrics has the gauges"
        )
    print_dashboard(f"http://127.0.0.1:{admin_at}", tokens, where=where_tokens, show=show_tokens)

    async def go() -> None:
        import signal as signals

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signals.SIGINT, signals.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        admin = asyncio.create_task(_serve_admin(db, broker, listener, tokens, stop))
        await supervise(children, stop=stop)
        await admin

    asyncio.run(go())


async def _serve_admin(
    db: str, broker: str, listener: socket.socket, tokens: list[Token], stop: asyncio.Event
) -> None:
    """The admin API and dashboard over the distributed shop's databases and broker, until
    ``stop``. Trouble here is reported and leaves the services running."""
    import uvicorn

    from sagakit import open_transport
    from sagakit.api import AdminConfig, create_admin_app
    from sagakit.api.guard import max_body_from
    from sagakit.observe.logs import get_logger
    from sagakit_shop.app import SAGA, open_stores
    from sagakit_shop.distributed import database_urls
    from sagakit_shop.saga import ORDER_SAGA

    stores = open_stores(database_urls(db))
    transport = open_transport(broker)
    try:
        await transport.start()
        app = create_admin_app(
            AdminConfig(
                saga_store=stores[SAGA],
                definitions=[ORDER_SAGA],
                tokens=tokens,
                stores=[store for name, store in stores.items() if name != SAGA],
                dead_letters=transport.dead_letters,
                trace_url=os.environ.get("SAGAKIT_TRACE_URL") or None,
                max_body=max_body_from(os.environ),
            )
        )
        # a dashboard's open stream must not hold Ctrl-C up: its connection is cut after 2s
        config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve(sockets=[listener]))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        await serving
        stopping.cancel()
    except Exception as exc:  # the shop keeps running without its dashboard
        get_logger("shop.up", service="up").error(f"the admin API stopped: {exc!r}")
    finally:
        listener.close()
        await transport.close()
        for store in stores.values():
            await store.close()


def _outside_url(name: str, what: str) -> Any:  # typer.Option is typed Any
    """The option naming the outside service ``name`` a process calls (``what``), also
    read from SAGAKIT_<NAME>_URL."""
    return typer.Option(
        envvar=f"SAGAKIT_{name.upper()}_URL", help=f"{what} (one in-process when not given)."
    )


def service(
    name: Annotated[
        str,
        typer.Argument(
            help="saga, order, inventory, payment, shipping, notification or relay; "
            "or gateway or carrier, the outside systems the shop calls."
        ),
    ],
    db: BaseDbOption = DEFAULT_PG,
    broker: BrokerOption = DEFAULT_BROKER,
    mode: ModeOption = "orchestration",
    port: Annotated[
        int,
        typer.Option(
            min=1, max=65535, help="Port of the order API (gateway, carrier: their own port)."
        ),
    ] = 8000,
    fail_rate: Annotated[
        float,
        typer.Option(
            min=0.0, max=1.0, help="Mail server trouble (gateway, carrier: share of 503s)."
        ),
    ] = 0.0,
    seed: Annotated[int, typer.Option()] = 7,
    delay: Annotated[
        float,
        typer.Option(min=0.0, max=60.0, help="Gateway, carrier: seconds before each answer."),
    ] = 0.0,
    books: Annotated[
        Path | None,
        typer.Option(
            help="Gateway: keep its authorizations in this SQLite file (in memory if not given)."
        ),
    ] = None,
    gateway_url: Annotated[
        str | None, _outside_url("gateway", "The payment gateway payment calls")
    ] = None,
    carrier_url: Annotated[
        str | None, _outside_url("carrier", "The carrier shipping calls")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            help="saga only: serve the orchestrator's Prometheus metrics on this port.",
        ),
    ] = None,
    share_port: Annotated[
        bool,
        typer.Option(
            "--share-port", help="order: replicas on this host serve the API on one port."
        ),
    ] = False,
    log_format: Annotated[
        str,
        typer.Option(
            envvar="SAGAKIT_LOG_FORMAT",
            help="story (coloured lines for people) or json (one object per line, with "
            "saga_id, step and trace_id, for a log pipeline).",
        ),
    ] = "story",
) -> None:
    """Run one process of the distributed shop (what `sagakit up` starts for each)."""
    from sagakit.observe.logs import configure
    from sagakit_shop.distributed import PROCESSES, run_service
    from sagakit_shop.outside import OUTSIDE, Trouble, serve_outside

    chosen = check_mode(mode)
    check_postgres(db)
    if name not in (*PROCESSES, *OUTSIDE):
        choices = ", ".join((*PROCESSES, *OUTSIDE))
        raise typer.BadParameter(f"choose one of {choices}", param_hint="'NAME'")
    if log_format not in ("story", "json"):
        raise typer.BadParameter("choose story or json", param_hint="'--log-format'")
    configure("json" if log_format == "json" else "story", also=LOGS)
    hide_personal_data()
    if name in OUTSIDE:
        from sagakit_shop.distributed import _exit_with_parent

        _exit_with_parent()  # as the shop's own processes do under `sagakit up`
        trouble = Trouble(fail_rate=fail_rate, delay_s=delay)
        asyncio.run(
            serve_outside(
                name, host="127.0.0.1", port=port, trouble=trouble, seed=seed, books=books
            )
        )
        return
    from sagakit.observe import tracing

    if not tracing.configure(service=f"shop-{name}") and name == "order":
        # Orders begin their traces here: with ids recorded (spans kept nowhere), the
        # dashboard shows each saga's trace id even when nothing exports spans.
        trace_ids_for_the_dashboard()
    asyncio.run(
        run_service(
            name,
            db=db,
            broker=broker,
            mode=chosen,
            port=port,
            fail_rate=fail_rate,
            seed=seed,
            gateway_url=gateway_url,
            carrier_url=carrier_url,
            metrics_port=metrics_port,
            share_port=share_port,
        )
    )
