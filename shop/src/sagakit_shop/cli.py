"""The shop's commands in the ``sagakit`` CLI: demo (and, distributed: up, service,
order, verify)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from sagakit.cli import console, fail, safe
from sagakit_shop.app import LOGS, MODES, Mode, hide_personal_data

if TYPE_CHECKING:
    from sagakit.api import Token

#: The shop's commands; the ``sagakit.commands`` entry point ``shop`` adds them to ``sagakit``.
app = typer.Typer()

ShowTokensOption = Annotated[
    bool,
    typer.Option(
        "--show-tokens",
        help="Print the dashboard's address with each token in it (for a local demo: "
        "anything printed ends up in scrollback and logs).",
    ),
]


ModeOption = Annotated[
    str, typer.Option("--mode", help="orchestration (a coordinator) or choreography (events).")
]


@app.command()
def demo(
    orders: Annotated[int, typer.Option(min=1, max=100_000, help="How many orders.")] = 20,
    fail_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of orders set up to fail.")
    ] = 0.25,
    seed: Annotated[int, typer.Option(help="Seed for the orders and the trouble.")] = 7,
    concurrency: Annotated[int, typer.Option(min=1, max=1024, help="Orders placed at once.")] = 8,
    mode: ModeOption = "orchestration",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead.")] = False,
    serve: Annotated[
        bool,
        typer.Option(
            "--serve/--no-serve",
            help="Keep the order API, the dashboard and the admin API up afterwards.",
        ),
    ] = False,
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port of the order API.")] = 8000,
    admin_port: Annotated[
        int | None,
        typer.Option(
            min=1, max=65535, help="Port of the dashboard and admin API (default: --port + 1)."
        ),
    ] = None,
    directory: Annotated[
        Path, typer.Option("--dir", help="Where the services keep their SQLite files.")
    ] = Path(".sagakit/shop"),
    gateway_outage: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=3600.0,
            help="Take the payment gateway down for this many seconds from the start: "
            "its circuit breaker opens and charges wait instead of failing.",
        ),
    ] = 0.0,
    gateway_url: Annotated[
        str | None,
        typer.Option(help="A payment gateway to call (by default one runs in-process)."),
    ] = None,
    carrier_url: Annotated[
        str | None,
        typer.Option(help="A carrier quote service to call (by default one runs in-process)."),
    ] = None,
    show_tokens: ShowTokensOption = False,
) -> None:
    """Run the shop on the embedded default: orders through the saga, then the check."""
    from sagakit.observe.logs import configure
    from sagakit_shop.demo import run_demo

    chosen = _check_mode(mode)
    configure("quiet" if as_json else "story", also=LOGS)
    hide_personal_data()
    from sagakit.observe import tracing

    if not tracing.configure(service="shop-demo") and serve:
        _trace_ids_for_the_dashboard()

    tokens, where = _tokens(directory / "tokens") if serve else ([], "")

    def serving(admin: str, orders_api: str, tokens: list[Token]) -> None:
        console.print()
        print_dashboard(admin, tokens, where=where, show=show_tokens)
        console.print(f"[bold]order API[/] docs: {orders_api}/docs   (Ctrl-C to stop)")

    result = asyncio.run(
        run_demo(
            directory,
            orders=orders,
            fail_rate=fail_rate,
            seed=seed,
            concurrency=concurrency,
            mode=chosen,
            serve=("127.0.0.1", port, _admin_port(port, admin_port)) if serve else None,
            on_serving=serving,
            tokens=tokens or None,
            gateway_outage=gateway_outage,
            gateway_url=gateway_url,
            carrier_url=carrier_url,
        )
    )
    if as_json:
        console.print_json(json.dumps(result.summary))
    else:
        _report(result)
    if not result.report.ok or result.summary["in_flight"]:
        raise fail("the shop's books do not balance (see above)")


def _admin_port(port: int, asked: int | None) -> int:
    """The dashboard and admin API's port: the one asked for, or next to the order API's."""
    return asked or (port + 1 if port < 65535 else port - 1)


def _trace_ids_for_the_dashboard() -> None:
    """Spans kept nowhere, so every saga still gets a trace id the dashboard can show.
    (Without the SDK, the 'otel' extra, there are no trace ids to show.)"""
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        return
    trace.set_tracer_provider(TracerProvider())


def _tokens(fresh_file: Path) -> tuple[list[Token], str]:
    """The configured tokens, or fresh ones written to ``fresh_file``; and where."""
    from sagakit.api.auth import configured_or_fresh

    try:
        return configured_or_fresh(fresh_file)
    except ValueError as exc:  # says which item, never what it holds
        raise fail(f"SAGAKIT_TOKENS: {exc}", 2) from exc


def print_dashboard(admin: str, tokens: list[Token], *, where: str, show: bool = False) -> None:
    """The dashboard's address, and where its tokens are (each by its first characters);
    with ``show``, the address with each token in it (in the fragment, which no server
    sees; the dashboard exchanges it for a session and drops it from the address bar)."""
    if show:
        for token in tokens:
            url = f"{admin}/#token={token.secret}"
            console.print(f"[bold]dashboard[/] ({token.role}): {url}", soft_wrap=True)
    else:
        console.print(f"[bold]dashboard[/]: {admin}/", soft_wrap=True)
        known = ", ".join(f"{t.role} {t.name} ({t.hint})" for t in tokens)
        console.print(f"  sign in with a token from {where}: {escape(known)}", soft_wrap=True)
    console.print(f"[bold]admin API[/] docs: {admin}/api/docs")


def _report(result: object) -> None:
    from sagakit_shop.demo import DemoResult

    assert isinstance(result, DemoResult)
    summary = result.summary
    table = Table(title="orders", title_justify="left", show_header=False)
    for name in ("orders", "completed", "compensated", "needs_attention", "in_flight"):
        table.add_row(name, str(summary[name]))
    table.add_row("elapsed", f"{summary['elapsed_s']} s")
    table.add_row("throughput", f"{summary['sagas_per_s']} sagas/s")
    console.print()
    console.print(table)
    checks = Table(title="invariants", title_justify="left", show_header=False)
    for name, ok in summary["invariants"].items():
        mark = "[green]holds[/]" if ok else "[bold red]VIOLATED[/]"
        checks.add_row(name, mark, safe("; ".join(result.report.violations[name][:3])))
    console.print(checks)
    breakers = Table(title="circuit breakers", title_justify="left", show_header=False)
    for name, breaker in summary["breakers"].items():
        deferred = f"{breaker['deferred']} step(s) deferred while open"
        breakers.add_row(name, breaker["state"], deferred)
    console.print(breakers)
    db = result.saga_db
    console.print(f"inspect: [bold]sagakit list --db {db}[/]")
    for sample in (result.sample_failed, result.sample_done):
        if sample:
            console.print(f"         [bold]sagakit show {sample} --db {db}[/]")
    keepers = " ".join(f"--db {url}" for url in result.breaker_dbs)
    console.print(f"         [bold]sagakit breakers {keepers}[/]", soft_wrap=True)


# ------------------------------------------------------------------ distributed

BrokerOption = Annotated[
    str,
    typer.Option(
        "--broker", envvar="SAGAKIT_BROKER", help="RabbitMQ URL; ?prefix=... namespaces queues."
    ),
]
BaseDbOption = Annotated[
    str,
    typer.Option(
        "--db",
        envvar="SAGAKIT_DB",
        help="PostgreSQL URL whose database name is the stem: shop -> shop_order, shop_saga, ...",
    ),
]
DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672/%2F"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/shop"


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


def _check_mode(mode: str) -> Mode:
    if mode not in MODES:
        raise typer.BadParameter(f"choose one of {', '.join(MODES)}", param_hint="'--mode'")
    return mode


def _check_postgres(db: str) -> None:
    if not db.startswith(("postgresql://", "postgres://")):
        raise typer.BadParameter(
            "the distributed shop needs a postgresql:// URL", param_hint="'--db'"
        )


@app.command()
def up(
    db: BaseDbOption = DEFAULT_PG,
    broker: BrokerOption = DEFAULT_BROKER,
    mode: ModeOption = "orchestration",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port of the order API.")] = 8000,
    admin_port: Annotated[
        int | None,
        typer.Option(
            min=1, max=65535, help="Port of the dashboard and admin API (default: --port + 1)."
        ),
    ] = None,
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

    _check_mode(mode)
    _check_postgres(db)
    tokens, where_tokens = _tokens(Path(".sagakit/tokens"))
    admin_at = _admin_port(port, admin_port)
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


@app.command()
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

    chosen = _check_mode(mode)
    _check_postgres(db)
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
        _trace_ids_for_the_dashboard()
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


order = typer.Typer(help="Talk to the order API of a running shop.", no_args_is_help=True)
app.add_typer(order, name="order")
ApiOption = Annotated[
    str, typer.Option("--api", envvar="SAGAKIT_API", help="Base URL of the order API.")
]


def _request(method: str, url: str, **kwargs: object) -> dict[str, object]:
    import httpx

    try:
        response = httpx.request(method, url, timeout=10, **kwargs)  # type: ignore[arg-type]
    except httpx.HTTPError as exc:
        raise fail(f"cannot reach the order API at {url}: {exc}") from exc
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text
        raise fail(f"the order API said {response.status_code}: {detail}")
    data: dict[str, object] = response.json()
    return data


@order.command("place")
def place_order(
    customer: Annotated[str, typer.Option(help="Customer id, e.g. c-ada.")],
    sku: Annotated[str, typer.Option(help="Item, e.g. lamp.")],
    quantity: Annotated[int, typer.Option(min=1, help="How many.")] = 1,
    api: ApiOption = "http://127.0.0.1:8000",
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            help="An idempotency key: placing again with it gives back the first order.",
        ),
    ] = None,
) -> None:
    """Place an order through the HTTP API; its saga starts with it."""
    placed = _request(
        "POST",
        f"{api}/orders",
        json={"customer_id": customer, "sku": sku, "quantity": quantity},
        headers={"Idempotency-Key": key} if key else {},
    )
    what = f"{placed['quantity']} x {placed['sku']} for {placed['amount']}"
    console.print(safe(f"placed {placed['order_id']}: {what} ({placed['status']})"))


@order.command("show")
def show_order(
    order_id: Annotated[str, typer.Argument(help="The order id, e.g. order-101.")],
    api: ApiOption = "http://127.0.0.1:8000",
) -> None:
    """Show an order's status as the order service sees it."""
    found = _request("GET", f"{api}/orders/{order_id}")
    reason = f" ({found['reason']})" if found.get("reason") else ""
    console.print(safe(f"{found['order_id']}: {found['status']}{reason}"))


@app.command()
def verify(
    db: Annotated[
        str | None,
        typer.Option(
            "--db", envvar="SAGAKIT_DB", help="The distributed shop's PostgreSQL URL (stem)."
        ),
    ] = None,
    directory: Annotated[
        Path, typer.Option("--dir", help="The embedded shop's directory (when no --db).")
    ] = Path(".sagakit/shop"),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Check money, stock, once and terminal across every service's database."""
    from sagakit import SagaError
    from sagakit_shop.app import embedded_urls, open_stores
    from sagakit_shop.verify import verify as check

    if db is not None:
        _check_postgres(db)
        from sagakit_shop.distributed import database_urls

        urls = database_urls(db)
    else:
        if not (directory / "saga.db").exists():
            raise fail(f"no shop in {directory} (run `sagakit demo` first, or give --db)")
        urls = embedded_urls(directory)

    async def go() -> object:
        stores = open_stores(urls)
        try:
            return await check(stores)
        finally:
            for store in stores.values():
                await store.close()

    try:
        report = asyncio.run(go())
    except SagaError as exc:
        raise fail(str(exc)) from exc
    from sagakit_shop.verify import Report

    assert isinstance(report, Report)
    if as_json:
        console.print_json(json.dumps(report.as_json()))
    else:
        table = Table(
            title=f"{report.orders} orders; sagas {dict(report.sagas)}",
            title_justify="left",
            show_header=False,
        )
        for name, holds in report.holds().items():
            table.add_row(
                name,
                "[green]holds[/]" if holds else "[bold red]VIOLATED[/]",
                safe("; ".join(report.violations[name][:3])),
            )
        console.print(table)
    if not report.ok:
        raise typer.Exit(1)
