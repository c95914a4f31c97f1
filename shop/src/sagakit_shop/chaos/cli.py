"""``sagakit chaos``: the fault-injection run, from the shell."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.live import Live

from sagakit.cli import console, errors, fail
from sagakit.testing.plant import PLANTS
from sagakit_shop.app import LOGS, MODES, Mode
from sagakit_shop.chaos.config import (
    QUICK_CADENCE,
    QUICK_RATE,
    QUICK_SAGAS,
    ChaosConfig,
    run_broker,
    run_db,
)
from sagakit_shop.chaos.schedule import Cadence

if TYPE_CHECKING:
    from sagakit_shop.chaos.harness import ChaosReport

#: ``sagakit chaos``; the ``sagakit.commands`` entry point ``chaos`` adds it to ``sagakit``.
app = typer.Typer()

Every = Annotated[float, typer.Option(min=0.0, help="Seconds between such faults (0: none).")]


@app.command()
def chaos(  # noqa: PLR0917 - typer passes a command's options positionally
    seed: Annotated[int | None, typer.Option(help="Seed of the faults and the load.")] = None,
    minutes: Annotated[float, typer.Option(min=0.1, help="How long the load runs.")] = 2.0,
    sagas: Annotated[
        int | None, typer.Option(min=1, help="Stop the load after this many orders instead.")
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="The quick tier: 1,100 sagas, 20+ kills, ...")
    ] = False,
    mode: Annotated[str, typer.Option(help="orchestration or choreography.")] = "orchestration",
    rate: Annotated[float, typer.Option(min=0.5, help="Orders placed per second.")] = 15.0,
    plant: Annotated[
        str | None, typer.Option(help=f"Plant a bug the checks must catch: {', '.join(PLANTS)}.")
    ] = None,
    db: Annotated[
        str | None,
        typer.Option(help="PostgreSQL URL; its database name is the stem of the run's databases."),
    ] = None,
    broker: Annotated[
        str | None, typer.Option(help="RabbitMQ URL; a ?prefix=... of the run's own is added.")
    ] = None,
    settle: Annotated[
        float, typer.Option(min=1.0, help="Seconds every saga gets to end after the faults.")
    ] = 120.0,
    kill_every: Every = 6.0,
    pause_every: Every = 20.0,
    broker_every: Every = 120.0,
    postgres_every: Every = 240.0,
    isolate_every: Every = 600.0,
    duplicate: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.05,
    reorder: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.05,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON report.")] = False,
    keep: Annotated[bool, typer.Option(help="Keep the databases and queues afterwards.")] = False,
    replicas: Annotated[
        int,
        typer.Option(
            min=1,
            max=4,
            help="Processes of each kind (saga keeper, every service, relay), sharing the "
            "work; kills and pauses strike any of them.",
        ),
    ] = 1,
    logs: Annotated[Path, typer.Option(help="Where the run's logs go.")] = Path(".sagakit/chaos"),
) -> None:
    """Run the distributed shop under a seeded nemesis, then check every invariant.

    Kills and pauses processes, restarts RabbitMQ and PostgreSQL, cuts a service off
    from its database, duplicates and reorders deliveries; then heals, drains and checks
    money, stock, once, termination, effects, outbox and every saga log. Exits 1 on any
    violation."""
    from sagakit.observe.logs import configure
    from sagakit_shop.chaos.harness import schedule_for
    from sagakit_shop.chaos.report import announce, render
    from sagakit_shop.chaos.report import as_json as report_json

    if mode not in MODES:
        raise typer.BadParameter(f"choose one of {', '.join(MODES)}", param_hint="'--mode'")
    if plant is not None and plant not in PLANTS:
        raise typer.BadParameter(f"choose one of {', '.join(PLANTS)}", param_hint="'--plant'")
    seed = seed if seed is not None else random.SystemRandom().randrange(1, 1_000_000)
    cadence = Cadence(kill_every, pause_every, broker_every, postgres_every, isolate_every)
    chosen: Mode = mode
    config = ChaosConfig(
        seed=seed,
        mode=chosen,
        seconds=minutes * 60,
        sagas=QUICK_SAGAS if quick and sagas is None else sagas,
        rate=QUICK_RATE if quick else rate,
        cadence=QUICK_CADENCE if quick else cadence,
        plant=plant,
        settle=settle,
        duplicate=duplicate,
        reorder=reorder,
        logs=logs,
        keep=keep,
        replicas=replicas,
    )
    config = _with_servers(config, db, broker)
    command = _command(config, quick=quick)
    shown = errors if as_json else console
    config.directory.mkdir(parents=True, exist_ok=True)
    # The supervisor's and the harness's own log lines go to a file, not across the progress.
    harness_log = (config.directory / "harness.log").open("a")
    configure("story", stream=harness_log, colour=False, also=LOGS)
    announce(shown, config, schedule_for(config), command)
    try:
        report = _run(config, shown, quiet=as_json)
    finally:
        harness_log.close()
    if report.trace:
        errors.print(report.trace, highlight=False)
    out = report_json(report, command)
    (config.directory / "report.json").write_text(json.dumps(out, indent=2))
    if as_json:
        console.print_json(json.dumps(out))
    else:
        render(console, report)
    if not report.ok:
        raise typer.Exit(1)


def _with_servers(config: ChaosConfig, db: str | None, broker: str | None) -> ChaosConfig:
    from dataclasses import replace

    url = run_db(db, config.run_id)
    if not url.startswith(("postgresql://", "postgres://")):
        raise typer.BadParameter("the chaos run needs a postgresql:// URL", param_hint="'--db'")
    amqp = run_broker(broker, config.run_id)
    if not amqp.startswith(("amqp://", "amqps://")):
        raise typer.BadParameter("the chaos run needs an amqp:// URL", param_hint="'--broker'")
    return replace(config, db=url, broker=amqp)


def _command(config: ChaosConfig, *, quick: bool) -> str:
    words = ["sagakit", "chaos", "--seed", str(config.seed), "--mode", config.mode]
    if quick:
        words.append("--quick")
    elif config.sagas:
        words += ["--sagas", str(config.sagas), "--rate", f"{config.rate:g}"]
    else:
        words += ["--minutes", f"{config.seconds / 60:g}", "--rate", f"{config.rate:g}"]
    if config.plant:
        words += ["--plant", config.plant]
    if config.replicas > 1:
        words += ["--replicas", str(config.replicas)]
    if not quick:
        c = config.cadence
        for name, every in [
            ("kill", c.kill),
            ("pause", c.pause),
            ("broker", c.broker),
            ("postgres", c.postgres),
            ("isolate", c.isolate),
        ]:
            words += [f"--{name}-every", f"{every:g}"]
    return " ".join(words)


def _run(config: ChaosConfig, shown: Console, *, quiet: bool) -> ChaosReport:
    """Run it with a live progress line (a line every 15 s when not on a terminal);
    SIGTERM and Ctrl-C stop it cleanly: the shop stopped, its databases and queues gone."""
    from sagakit_shop.chaos.harness import Snapshot, run_chaos
    from sagakit_shop.chaos.report import progress_line

    async def go() -> ChaosReport:
        main = asyncio.current_task()
        assert main is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
        if quiet:
            return await run_chaos(config)
        if shown.is_terminal:
            with Live(console=shown, refresh_per_second=2, transient=False) as live:
                return await run_chaos(config, on_progress=lambda s: live.update(progress_line(s)))
        last = time.monotonic()

        def now_and_then(snap: Snapshot) -> None:
            nonlocal last
            if time.monotonic() - last >= 15:
                last = time.monotonic()
                shown.print(progress_line(snap))

        return await run_chaos(config, on_progress=now_and_then)

    try:
        return asyncio.run(go())
    except (KeyboardInterrupt, asyncio.CancelledError):
        why = "interrupted: the shop is stopped, its databases and queues removed"
        raise fail(why, 130) from None
