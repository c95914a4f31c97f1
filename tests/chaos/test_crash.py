"""The crash test: SIGKILL a worker mid-flight, again and again, then check the books.

A real subprocess (``tests/chaos/crash_worker.py``) runs ORDER sagas against the store.
The test kills it with SIGKILL at seeded random moments, restarts it each time, and
finally lets it finish. Then, from this process, it checks what a user relies on:
every saga ended completed or compensated (as its data says it must), no command's
effect happened twice, a compensated saga's effects net out, every saga log is a legal
forward history, no step had to time out (nothing was lost), and the outbox was fully
published.

Reproduce a failure with the seed it prints:
``SAGAKIT_CRASH_SEED=<seed> .venv/bin/pytest tests/chaos -k <sqlite|postgres>``.
The kill moments replay exactly; what the worker was doing at each one is up to timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest
from sqlalchemy import func, inspect, select

from sagakit import open_store
from sagakit.model.status import SagaStatus
from sagakit.stores.schema import saga_outbox
from sagakit.stores.sql import SqlSagaStore
from sagakit.testing import forward_only
from tests.chaos.crash_worker import RUNNING, effects, expected_effects, plan, saga_id

REPO_ROOT = Path(__file__).resolve().parents[2]
SAGAS = 100
#: Kills aimed at sagas in flight, some time after the worker says it is running...
KILLS = 6
#: ...and kills aimed at start-up (imports, migration, the first saga starts).
EARLY_KILLS = 2
RUNNING_LIMIT = 30.0
FINAL_RUN_LIMIT = 90.0

pytestmark = [pytest.mark.slow, pytest.mark.timeout(FINAL_RUN_LIMIT + 120)]


@dataclass(slots=True)
class Kill:
    """One planned SIGKILL, and what it found."""

    number: int
    early: bool
    delay: float
    alive: bool = False
    terminal: int = 0
    effect_rows: int = 0

    @property
    def landed(self) -> bool:
        """A kill aimed at work in flight hit a live worker with sagas still to finish."""
        return not self.early and self.alive and self.terminal < SAGAS

    def __str__(self) -> str:
        when = f"{self.delay:.2f}s after {'spawn' if self.early else 'running'}"
        found = "live worker" if self.alive else "worker had already exited"
        return (
            f"kill {self.number}: {when}; {found}; then {self.terminal}/{SAGAS} terminal, "
            f"{self.effect_rows} effect rows"
        )


def kill_schedule(seed: int) -> list[Kill]:
    rng = random.Random(seed)
    kinds = [False] * KILLS + [True] * EARLY_KILLS
    rng.shuffle(kinds)
    return [
        Kill(number, early, rng.uniform(0.05, 0.6) if early else rng.uniform(0.1, 0.9))
        for number, early in enumerate(kinds, start=1)
    ]


class Worker:
    """One incarnation of the crash worker, its output going to a log file."""

    def __init__(self, url: str, seed: int, log_path: Path) -> None:
        self.url = url
        self.seed = seed
        self.log_path = log_path
        self._log: IO[bytes] | None = None
        self.process: asyncio.subprocess.Process | None = None

    async def spawn(self) -> None:
        self._log = self.log_path.open("wb")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.chaos.crash_worker",
            *("--db", self.url, "--sagas", str(SAGAS), "--seed", str(self.seed)),
            cwd=REPO_ROOT,
            stdout=self._log,
            stderr=asyncio.subprocess.STDOUT,
        )

    @property
    def proc(self) -> asyncio.subprocess.Process:
        assert self.process is not None, "spawn() first"
        return self.process

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_running(self) -> None:
        """Return once the worker's runtime is consuming (or the worker has exited)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RUNNING_LIMIT
        while RUNNING not in self.output() and self.proc.returncode is None:
            if loop.time() > deadline:
                raise AssertionError(f"worker not running after {RUNNING_LIMIT}s:\n{self.tail()}")
            await asyncio.sleep(0.02)

    async def sigkill(self) -> bool:
        """SIGKILL the worker and reap it; say whether it was still alive."""
        alive = self.proc.returncode is None
        if alive:
            with contextlib.suppress(ProcessLookupError):  # it may exit in between
                self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        self.close()
        return alive and self.proc.returncode == -signal.SIGKILL

    async def finish(self, timeout: float) -> int | None:
        """Wait for a clean exit; on timeout kill it and return None."""
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            await self.sigkill()
            return None
        finally:
            self.close()

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:])


async def tables(store: SqlSagaStore) -> set[str]:
    async with store.engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def progress(store: SqlSagaStore, ids: list[str]) -> tuple[int, int]:
    """(terminal sagas, effect rows) so far; a kill may land before the tables exist."""
    present = await tables(store)
    terminal = 0
    if "sagas" in present:
        statuses = await store.statuses(ids)
        terminal = sum(SagaStatus(s).terminal for s in statuses.values())
    rows = 0
    if "effects" in present:
        async with store.engine.connect() as conn:
            rows = int(await conn.scalar(select(func.count()).select_from(effects)) or 0)
    return terminal, rows


async def audit(store: SqlSagaStore, seed: int, ids: list[str]) -> tuple[list[str], int]:
    """Every violation of the crash guarantees, and how many sagas retried something."""
    problems: list[str] = []
    statuses = await store.statuses(ids)
    async with store.engine.connect() as conn:
        rows = (await conn.execute(select(effects).order_by(effects.c.id))).all()
    found: dict[str, Counter[tuple[str, str]]] = {sid: Counter() for sid in ids}
    detail: dict[tuple[str, str, str], list[str]] = {}
    for row in rows:
        found.setdefault(row.saga_id, Counter())[(row.step, row.op)] += 1
        detail.setdefault((row.saga_id, row.step, row.op), []).append(
            f"pid {row.pid} attempt {row.attempt} message {row.message_id[:8]}"
        )
    retried = 0
    for index, sid in enumerate(ids):
        data = plan(seed, index)
        status = statuses.get(sid, "missing")
        must_end = "completed" if data["outcome"] == "complete" else "compensated"
        if status != must_end:
            problems.append(f"{sid} ({data['outcome']}) is {status}, should be {must_end}")
        counts = found.pop(sid)
        for (step, op), n in sorted(counts.items()):
            if n > 1:
                runs = "; ".join(detail[(sid, step, op)])
                problems.append(f"{sid}: {step} {op} happened {n} times ({runs})")
        if status == "compensated":
            for step in ("reserve", "charge"):
                done, undone = counts[(step, "action")], counts[(step, "compensation")]
                if done != undone:
                    problems.append(
                        f"{sid}: {step} ran {done} time(s) but was compensated {undone} time(s)"
                    )
        expected = Counter(expected_effects(data))
        if counts != expected:
            problems.append(
                f"{sid} ({data['outcome']}): effects {dict(sorted(counts.items()))}, "
                f"expected {dict(sorted(expected.items()))}"
            )
        history = await store.history(sid) if status != "missing" else []
        problems.extend(forward_only(sid, history))
        # Steps time out after 30s, far longer than this test runs: a timeout here means
        # a command or a reply was lost, and the deadline covered it up.
        problems.extend(
            f"{sid}: a step timed out, so a message was lost? {event.data}"
            for event in history
            if event.type == "StepTimedOut"
        )
        retried += any(event.type == "RetryScheduled" for event in history)
    problems.extend(f"effects for a saga never started: {sid}" for sid in found)
    unsent = await store.unsent_count()
    if unsent:
        async with store.engine.connect() as conn:
            sample = (
                await conn.execute(
                    select(saga_outbox.c.type, saga_outbox.c.saga_id)
                    .where(saga_outbox.c.sent_at.is_(None))
                    .limit(5)
                )
            ).all()
        problems.append(f"{unsent} outbox row(s) never published, e.g. {sample}")
    return problems, retried


async def test_sagas_survive_repeated_sigkill(store_url: str, tmp_path: Path) -> None:
    seed = int(os.environ.get("SAGAKIT_CRASH_SEED") or random.SystemRandom().randrange(2**31))
    schedule = kill_schedule(seed)
    ids = [saga_id(i) for i in range(SAGAS)]
    print(f"crash test: seed {seed}, {SAGAS} sagas, {len(schedule)} kills on {store_url}")
    store = open_store(store_url)
    loop = asyncio.get_running_loop()
    began = loop.time()
    worker: Worker | None = None
    try:
        for kill in schedule:
            worker = Worker(store_url, seed, tmp_path / f"worker-{kill.number}.log")
            await worker.spawn()
            if not kill.early:
                await worker.wait_running()
            await asyncio.sleep(kill.delay)
            kill.alive = await worker.sigkill()
            kill.terminal, kill.effect_rows = await progress(store, ids)
            print(f"  {kill}")

        worker = Worker(store_url, seed, tmp_path / "worker-final.log")
        await worker.spawn()
        code = await worker.finish(FINAL_RUN_LIMIT)
        print(f"  final run exited {code}; {loop.time() - began:.1f}s in all")
        problems, retried = await audit(store, seed, ids)

        context = (
            f"seed {seed} (rerun with SAGAKIT_CRASH_SEED={seed}), {store_url}\n"
            + "\n".join(str(k) for k in schedule)
            + f"\nfinal run's output, last lines:\n{worker.tail()}"
        )
        found = f"{len(problems)} violation(s):\n" + "\n".join(problems[:40])
        assert code == 0, f"final run did not finish cleanly (exit {code})\n{found}\n\n{context}"
        assert not problems, f"{found}\n\n{context}"
        # The test is only as good as the faults it injected: the kills must have hit
        # work in flight, and retries must have happened.
        landed = sum(k.landed for k in schedule)
        assert landed >= 5, f"only {landed} kill(s) hit sagas in flight\n{context}"
        assert retried > 0, f"no saga retried anything\n{context}"
    finally:
        if worker is not None and worker.process is not None:
            await worker.sigkill()  # never leave a worker behind a failed test
        await store.close()
