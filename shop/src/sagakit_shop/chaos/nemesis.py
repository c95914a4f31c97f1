"""The nemesis: carries out the planned faults against the running shop, then heals.

Process faults go straight to the supervised children (``SIGKILL``; ``SIGSTOP`` then
``SIGCONT``); the supervisor starts a killed child again. A broker or PostgreSQL
restart runs as a helper in a session of its own, so it completes (and the server comes
back) even if this process is interrupted or killed halfway. Cutting a service off
from its database is ``ALLOW_CONNECTIONS false`` plus ending its sessions; healing
lets it back in. :meth:`Nemesis.heal` undoes whatever is still in force, and is safe
to call at any time, any number of times.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from sagakit_shop.chaos.schedule import Fault
from sagakit_shop.distributed import Child

#: Commands the nemesis runs (``{version}`` is the local PostgreSQL's major version).
BROKER_STOP = "rabbitmqctl stop_app"
BROKER_START = "rabbitmqctl start_app && rabbitmqctl await_startup"
POSTGRES_RESTART = "pg_ctlcluster --skip-systemctl-redirect {version} main restart -m immediate"


@dataclass(frozen=True, slots=True)
class Servers:
    """How the nemesis reaches the shared servers."""

    pg_admin: str
    broker_stop: str = BROKER_STOP
    broker_start: str = BROKER_START
    postgres_restart: str | None = None

    @classmethod
    def local(cls, db: str) -> Servers:
        admin = make_url(db).set(drivername="postgresql", database="postgres")
        versions = sorted(p.name for p in Path("/etc/postgresql").glob("*") if p.is_dir())
        restart = POSTGRES_RESTART.format(version=versions[-1]) if versions else None
        return cls(pg_admin=admin.render_as_string(hide_password=False), postgres_restart=restart)


@dataclass(slots=True)
class Struck:
    """A fault as it happened."""

    fault: Fault
    at: float
    outcome: str
    landed: bool

    def as_json(self) -> dict[str, Any]:
        return {**self.fault.as_json(), "struck_at": round(self.at, 2), "outcome": self.outcome}


@dataclass
class Nemesis:
    children: dict[str, Child]
    servers: Servers
    #: The database of each service the nemesis may cut off.
    databases: dict[str, str]
    struck: list[Struck] = field(default_factory=list)
    active: dict[int, str] = field(default_factory=dict)
    _paused: dict[int, asyncio.subprocess.Process] = field(default_factory=dict)
    _isolated: set[str] = field(default_factory=set)
    _helpers: set[asyncio.subprocess.Process] = field(default_factory=set)
    _broker_down: bool = False
    _started: float = 0.0

    @property
    def landed(self) -> Counter[str]:
        return Counter(s.fault.kind for s in self.struck if s.landed)

    async def run(self, schedule: list[Fault], started: float, stop: asyncio.Event) -> None:
        """Strike each fault at its moment (measured from ``started``, monotonic) until
        ``stop`` is set; a fault already striking then runs its course."""
        self._started = started
        strikes = [
            asyncio.create_task(self._strike_at(f, stop)) for f in schedule if _is_process(f)
        ]
        infrastructure = [f for f in schedule if not _is_process(f)]
        try:
            for fault in infrastructure:  # one at a time: they never overlap
                await self._strike_at(fault, stop)
            await asyncio.gather(*strikes)
        finally:
            for task in strikes:
                task.cancel()
            await asyncio.gather(*strikes, return_exceptions=True)

    async def _strike_at(self, fault: Fault, stop: asyncio.Event) -> None:
        delay = self._started + fault.at - time.monotonic()
        if stop.is_set():
            return
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
                return  # stopped before its moment came
        at = time.monotonic() - self._started
        key = id(fault)
        self.active[key] = fault.describe().strip().split("  ", 1)[-1]
        try:
            outcome, landed = await self._strike(fault)
        except Exception as exc:
            outcome, landed = f"failed: {type(exc).__name__}: {exc}", False
        finally:
            self.active.pop(key, None)
        self.struck.append(Struck(fault, at, outcome, landed))

    async def _strike(self, fault: Fault) -> tuple[str, bool]:
        if fault.kind == "kill":
            return await self._kill(fault.target)
        if fault.kind == "pause":
            return await self._pause(fault.target, fault.seconds)
        if fault.kind == "broker":
            return await self._restart_broker(fault.seconds)
        if fault.kind == "postgres":
            return await self._restart_postgres()
        return await self._isolate(fault.target, fault.seconds)

    async def _live(self, name: str, wait: float = 5.0) -> asyncio.subprocess.Process | None:
        """The child's running process, waiting a little for one being restarted."""
        deadline = time.monotonic() + wait
        while True:
            process = self.children[name].process
            if process is not None and process.returncode is None:
                return process
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.1)

    async def _kill(self, name: str) -> tuple[str, bool]:
        process = await self._live(name)
        if process is None:
            return f"{name} was not running", False
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
            return f"killed {name} (pid {process.pid})", True
        return f"{name} had just exited", False

    async def _pause(self, name: str, seconds: float) -> tuple[str, bool]:
        process = await self._live(name)
        if process is None:
            return f"{name} was not running", False
        try:
            os.kill(process.pid, signal.SIGSTOP)
        except ProcessLookupError:
            return f"{name} had just exited", False
        self._paused[process.pid] = process
        try:
            await asyncio.sleep(seconds)
        finally:
            self._resume(process)
        return f"paused {name} (pid {process.pid}) for {seconds:.1f}s", True

    def _resume(self, process: asyncio.subprocess.Process) -> None:
        self._paused.pop(process.pid, None)
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGCONT)

    async def _helper(self, command: str) -> int:
        """Run a shell command in its own session (it finishes even if we are stopped)."""
        helper = await asyncio.create_subprocess_exec(
            "sh",
            "-c",
            command,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        self._helpers.add(helper)
        try:
            return await asyncio.shield(helper.wait())
        finally:
            if helper.returncode is not None:
                self._helpers.discard(helper)

    async def _restart_broker(self, seconds: float) -> tuple[str, bool]:
        started = time.monotonic()
        self._broker_down = True
        # One helper for stop, wait and start: the broker comes back whatever happens here.
        code = await self._helper(
            f"{self.servers.broker_stop}; sleep {seconds:.2f}; {self.servers.broker_start}"
        )
        self._broker_down = code != 0
        took = time.monotonic() - started
        return f"RabbitMQ stopped and started again ({took:.1f}s, exit {code})", code == 0

    async def _restart_postgres(self) -> tuple[str, bool]:
        if self.servers.postgres_restart is None:
            return "no local PostgreSQL cluster to restart", False
        started = time.monotonic()
        code = await self._helper(self.servers.postgres_restart)
        ready = await self._postgres_ready(60.0)
        took = time.monotonic() - started
        return f"PostgreSQL restarted ({took:.1f}s, exit {code})", code == 0 and ready

    async def _postgres_ready(self, timeout: float) -> bool:
        import asyncpg

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                conn = await asyncpg.connect(self.servers.pg_admin, timeout=2)
            except (OSError, asyncpg.PostgresError, TimeoutError):
                await asyncio.sleep(0.2)
                continue
            await conn.close()
            return True
        return False

    async def _isolate(self, name: str, seconds: float) -> tuple[str, bool]:
        database = self.databases[name]
        self._isolated.add(database)
        await self._admin(
            f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS false',
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{database}' AND pid <> pg_backend_pid()",
        )
        try:
            await asyncio.sleep(seconds)
        finally:
            await self._let_in(database)
        return f"{name}'s database {database} refused connections for {seconds:.0f}s", True

    async def _let_in(self, database: str) -> None:
        deadline = time.monotonic() + 120.0
        while True:
            try:
                await self._admin(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS true')
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
                continue
            self._isolated.discard(database)
            return

    async def _admin(self, *statements: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.servers.pg_admin, timeout=5)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    async def heal(self) -> list[str]:
        """Undo every fault still in force; return what was undone."""
        undone = []
        for process in list(self._paused.values()):
            self._resume(process)
            undone.append(f"SIGCONT pid {process.pid}")
        for helper in list(self._helpers):  # a restart in progress: let it finish
            if helper.returncode is None:
                await helper.wait()
            self._helpers.discard(helper)
        if self._broker_down:
            code = await self._helper(self.servers.broker_start)
            self._broker_down = code != 0
            undone.append(f"RabbitMQ started again (exit {code})")
        await self._postgres_ready(60.0)
        for database in list(self._isolated):
            await self._let_in(database)
            undone.append(f"{database} accepts connections again")
        return undone


def _is_process(fault: Fault) -> bool:
    return fault.kind in ("kill", "pause")
