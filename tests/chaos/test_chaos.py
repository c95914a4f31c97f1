"""``sagakit chaos``: the quick tier holds every invariant, and each planted bug is caught.

Each test runs the real command: it starts the distributed shop as processes of its
own over the real PostgreSQL and RabbitMQ, with a database stem and a queue prefix of
the test's own, strikes its seeded faults, and checks. The test reads the JSON report
and the exit status, then makes sure the run left nothing behind: no process, no
database, no queue or exchange.

A failure prints the report's ``command``; run it again with ``--keep`` to look at the
databases afterwards. ``SAGAKIT_CHAOS_SEED`` picks another seed for every test.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AMQP_URL, PG_ADMIN, open_rabbit, unavailable

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("SAGAKIT_CHAOS_SEED", "20251126"))
#: Chaos runs restart the shared broker and PostgreSQL, so two of them (two checkouts'
#: test suites at once) never overlap: each would read the other's faults as its own.
RUN_LOCK = Path(os.environ.get("SAGAKIT_CHAOS_LOCK", "/tmp/sagakit-chaos-run.lock"))
NO_FAULTS = [f"--{kind}-every=0" for kind in ("kill", "pause", "broker", "postgres", "isolate")]


@dataclass
class Run:
    code: int
    report: dict[str, Any]
    stem: str
    prefix: str

    @property
    def violated(self) -> dict[str, Any]:
        checks = self.report.get("checks") or {}
        return dict(checks.get("violations", {}))

    def __str__(self) -> str:  # what pytest shows when an assertion about the run fails
        shown = {k: self.report.get(k) for k in ("command", "error", "sagas", "faults")}
        shown["violations"] = self.violated
        return json.dumps(shown, indent=1)


async def _servers_up() -> None:
    import asyncpg

    try:
        conn = await asyncpg.connect(PG_ADMIN, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        unavailable("PostgreSQL", exc)
    await conn.close()
    probe = await open_rabbit(AMQP_URL)
    await probe.teardown()  # its own dead-letter queue, declared on start
    await probe.close()


async def _leftover_databases(stem: str) -> list[str]:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN, timeout=5)
    try:
        rows = await conn.fetch(
            "SELECT datname FROM pg_database WHERE starts_with(datname, $1)", stem
        )
    finally:
        await conn.close()
    return [r["datname"] for r in rows]


async def _rabbitmqctl(*args: str) -> list[str]:
    ctl = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        *args,
        "-q",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await ctl.communicate()
    return out.decode().split()


async def _leftover_queues(prefix: str) -> list[str]:
    names = await _rabbitmqctl("list_queues", "name")
    names += await _rabbitmqctl("list_exchanges", "name")
    return [n for n in names if n.startswith(prefix)]


def _leftover_processes(stem: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if stem.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


async def _clean(stem: str, prefix: str) -> None:
    """What a run that was cut short may have left: removed, so the next run is clean."""
    import asyncpg

    for pid in _leftover_processes(stem):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    conn = await asyncpg.connect(PG_ADMIN, timeout=5)
    try:
        for name in await _leftover_databases(stem):
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
    transport = await open_rabbit(AMQP_URL)
    try:
        channel = await transport.connection.channel()
        queues = await _rabbitmqctl("list_queues", "name")
        for name in (n for n in queues if n.startswith(prefix)):
            await channel.queue_delete(name)
        exchanges = await _rabbitmqctl("list_exchanges", "name")
        for name in (n for n in exchanges if n.startswith(prefix)):
            await channel.exchange_delete(name)
    finally:
        await transport.teardown()  # the cleaner's own dead-letter queue
        await transport.close()


async def chaos(tmp_path: Path, *args: str, limit: float) -> Run:
    """Run ``sagakit chaos --json`` with ``args``, one chaos run on this machine at a time."""
    lock = await asyncio.to_thread(RUN_LOCK.open, "a")
    try:  # closing the file lets the next run go
        await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
        return await _chaos(tmp_path, *args, limit=limit)
    finally:
        lock.close()


async def _chaos(tmp_path: Path, *args: str, limit: float) -> Run:
    """Run ``sagakit chaos --json`` with ``args``; SIGTERM it (it cleans up) past ``limit``."""
    await _servers_up()
    run_id = uuid.uuid4().hex[:8]
    stem, prefix = f"sagakit_chaos_t{run_id}", f"chaos-t{run_id}."
    db = PG_ADMIN.rsplit("/", 1)[0] + f"/{stem}"
    command = [sys.executable, "-m", "sagakit", "chaos", "--json", "--logs", str(tmp_path)]
    command += ["--db", db, "--broker", f"{AMQP_URL}?prefix={prefix}", *args]
    with (tmp_path / "stderr.log").open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            *command, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=stderr
        )
        try:
            out, _ = await asyncio.wait_for(process.communicate(), limit)
        except TimeoutError:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 180)
            await _clean(stem, prefix)
            raise AssertionError(f"sagakit chaos took more than {limit:.0f}s") from None
    try:
        report = json.loads(out)
    except ValueError:
        await _clean(stem, prefix)
        raise AssertionError((tmp_path / "stderr.log").read_text()[-3000:]) from None
    run = Run(process.returncode or 0, report, stem, prefix)
    left = (
        await _leftover_databases(stem),
        await _leftover_queues(prefix),
        _leftover_processes(stem),
    )
    if any(left):
        await _clean(stem, prefix)
    assert left == ([], [], []), f"the run left databases, queues or processes behind: {left}"
    return run


@pytest.mark.timeout(900)
async def test_the_quick_tier_holds_every_invariant_under_the_nemesis(tmp_path: Path) -> None:
    run = await chaos(tmp_path, "--quick", f"--seed={SEED}", limit=600)
    report = run.report
    assert run.code == 0, run
    assert report["ok"] and report["error"] is None, run
    assert all(report["checks"]["invariants"].values()), run
    # what the quick tier promises: at least 1,000 sagas, 20 kills and a broker restart
    assert sum(report["sagas"].values()) >= 1000, run
    landed = report["faults"]["landed"]
    assert landed["kill"] >= 20, run
    assert landed["broker"] >= 1, run
    assert landed["postgres"] >= 1, run
    wire = report["faults"]["wire"]
    assert wire["duplicated"] > 0 and wire["reordered"] > 0, run
    # the outside check saw the payment gateway's own books, not an empty file
    assert report["checks"]["gateway_authorizations"] > 0, run
    # every saga ended within the bound, and none had to be handed to a person
    assert report["settled_in_s"] <= report["settle_bound_s"], run
    assert report["sagas"].get("needs_attention", 0) == 0, run
    assert report["sagas"]["completed"] > 0 and report["sagas"]["compensated"] > 0, run


PLANTED = {
    # duplicated commands run twice: a second release of the same reservation
    "no-inbox": (["--sagas=300", "--duplicate=0.5", "--kill-every=4"], "stock"),
    # a start message sent before the order committed is lost when the broker is down
    "publish-before-commit": (["--sagas=300", "--broker-every=1000", "--settle=20"], "terminal"),
    # inventory cut off past reserve_stock's timeouts: releases overtake their reservations
    "no-barrier": (["--sagas=800", "--rate=16", "--isolate-every=1000", "--settle=90"], "effects"),
}


@pytest.mark.timeout(600)
@pytest.mark.parametrize("plant", list(PLANTED))
async def test_a_planted_bug_is_caught(tmp_path: Path, plant: str) -> None:
    args, caught_by = PLANTED[plant]
    run = await chaos(tmp_path, f"--plant={plant}", f"--seed={SEED}", *NO_FAULTS, *args, limit=400)
    assert run.report["error"] is None, run
    assert run.code == 1, run
    assert not run.report["ok"], run
    assert caught_by in run.violated, run
    assert run.violated[caught_by]["count"] > 0, run


@pytest.mark.timeout(600)
async def test_two_replicas_of_every_process_share_the_work_under_kills(tmp_path: Path) -> None:
    """Every kind of process runs twice (saga keeper, services, relay) and any of them
    is killed with SIGKILL mid-load: the replicas left finish what the killed one held,
    and no invariant breaks."""
    args = ["--replicas=2", "--sagas=160", "--rate=8", "--kill-every=2"]
    run = await chaos(tmp_path, f"--seed={SEED}", *NO_FAULTS, *args, limit=400)
    report = run.report
    assert run.code == 0, run
    assert report["ok"] and report["error"] is None, run
    assert all(report["checks"]["invariants"].values()), run
    assert report["faults"]["landed"]["kill"] >= 5, run
    restarted = {name for name, count in report["restarts"].items() if count}
    assert any(name.endswith("-2") for name in restarted), run  # second replicas die too
    assert any(not name.endswith("-2") for name in restarted), run
    assert report["settled_in_s"] <= report["settle_bound_s"], run
    assert report["sagas"].get("needs_attention", 0) == 0, run
    assert report["sagas"]["completed"] > 0 and report["sagas"]["compensated"] > 0, run
