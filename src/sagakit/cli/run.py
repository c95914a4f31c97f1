"""``sagakit run MODULE:ATTR``: any sagakit service, run until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from sagakit.cli.app import app, fail


@app.command()
def run(
    target: Annotated[
        str,
        typer.Argument(
            help="MODULE:ATTR naming a Runtime, or a function (sync or async, no arguments) "
            "that returns one, e.g. concerts.service:runtime."
        ),
    ],
    grace: Annotated[
        float,
        typer.Option(
            envvar="SAGAKIT_GRACE",
            min=0.0,
            help="Seconds a stop gives running handlers to finish; what has not finished "
            "then is rolled back and handed back to the broker.",
        ),
    ] = 10.0,
    health_port: Annotated[
        int | None,
        typer.Option(
            envvar="SAGAKIT_HEALTH_PORT",
            min=0,
            max=65535,
            help="Serve /healthz, /readyz and /metrics on this port.",
        ),
    ] = None,
    health_host: Annotated[
        str,
        typer.Option(
            envvar="SAGAKIT_HEALTH_HOST",
            help="Address of the health port (0.0.0.0 in a container, for its probes).",
        ),
    ] = "127.0.0.1",
    migrate: Annotated[
        bool,
        typer.Option(
            "--migrate",
            envvar="SAGAKIT_MIGRATE",
            help="Migrate the stores at start (otherwise a store that is behind stops it).",
        ),
    ] = False,
    app_dir: Annotated[
        str,
        typer.Option(envvar="SAGAKIT_APP_DIR", help="Directory to import MODULE from."),
    ] = ".",
    log_format: Annotated[
        str,
        typer.Option(
            envvar="SAGAKIT_LOG_FORMAT",
            help="story (lines for people) or json (one object per line, for a log pipeline).",
        ),
    ] = "story",
) -> None:
    """Run a service: start its runtime, serve until SIGTERM or SIGINT, stop within --grace.

    Every option can come from its SAGAKIT_* environment variable instead."""
    from sagakit.errors import SagaError
    from sagakit.observe.logs import configure
    from sagakit.service import TargetError, load_target, runtime_from, serve

    if log_format not in ("story", "json"):
        raise typer.BadParameter("choose story or json", param_hint="'--log-format'")
    configure("json" if log_format == "json" else "story")
    if health_port is not None:
        import importlib.util

        if not all(importlib.util.find_spec(m) for m in ("uvicorn", "starlette")):
            raise fail("--health-port needs the api extra: pip install 'sagakit[api]'", 2)
    try:
        found = load_target(target, directory=app_dir)
    except TargetError as exc:
        raise fail(str(exc), 2) from exc

    async def go() -> None:
        runtime = await runtime_from(found, target)
        runtime.migrate = runtime.migrate or migrate
        health = (health_host, health_port) if health_port is not None else None
        try:
            await serve(runtime, grace=grace, health=health, name=target)
        finally:
            for store in runtime.stores:  # this process owns them now
                await store.close()

    try:
        asyncio.run(go())
    except TargetError as exc:
        raise fail(str(exc), 2) from exc
    except (SagaError, OSError) as exc:
        raise fail(f"{target}: {exc}") from exc
