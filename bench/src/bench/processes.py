"""The processes of a run: a system's services, and the ``bench.worker`` processes that
run its workload, each in a session of its own so that a signal reaches all of it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from bench import procs
from bench.config import ROOT
from bench.prepared import Prepared
from bench.worker import PREFIX


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT / "bench" / "src"), str(ROOT / "src"), env.get("PYTHONPATH", "")) if p
    )
    env.update(extra or {})
    return env


class Worker:
    """A ``bench.worker`` process and the line protocol to it."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self.process = process
        self.log = log

    @classmethod
    async def spawn(
        cls, prepared: Prepared, spec: dict[str, Any], log: Path, *, system: str | None = None
    ) -> Worker:
        argv = [
            sys.executable, "-m", "bench.worker",
            "--system", system or prepared.system,
            "--db", prepared.worker_db,
            "--options", json.dumps(prepared.options),
            "--spec", json.dumps(spec),
        ]  # fmt: skip
        with log.open("ab") as err:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                env=child_env(),
                cwd=ROOT,
                start_new_session=True,
            )
        return cls(process, log)

    @property
    def pid(self) -> int:
        return self.process.pid

    async def expect(self, event: str, timeout: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = await self.process.stdout.readline()
                if not line:
                    await self.process.wait()
                    raise RuntimeError(
                        f"worker exited ({self.process.returncode}) before {event!r}: "
                        f"{tail(self.log)}"
                    )
                text = line.decode(errors="replace")
                if text.startswith(PREFIX):
                    message: dict[str, Any] = json.loads(text[len(PREFIX) :])
                    if message.get("event") == event:
                        return message

    async def send(self, word: str) -> None:
        assert self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.process.stdin.write(word.encode() + b"\n")
            await self.process.stdin.drain()

    async def finish(self, timeout: float = 60) -> None:
        await self.send("exit")
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            kill(self.process)
            await self.process.wait()

    def kill(self) -> None:
        kill(self.process)


def kill(process: asyncio.subprocess.Process, sig: int = signal.SIGKILL) -> None:
    """Signal the process's whole group (it was started in a session of its own)."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)


def tail(path: Path, lines: int = 12) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


async def start_services(prepared: Prepared, logs: Path) -> None:
    for service in prepared.services:
        log = logs / f"{prepared.system}.{service.name}.log"
        with log.open("ab") as out:
            service.process = await asyncio.create_subprocess_exec(
                *service.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=child_env(service.env),
                cwd=ROOT,
                start_new_session=True,
            )
    for service in prepared.services:
        if service.ready is not None:
            await service.ready()
        if service.process is not None and service.process.returncode is not None:
            raise RuntimeError(f"{service.name} exited at start: {tail(logs / service.name)}")


async def stop_services(prepared: Prepared, *, sig: int = signal.SIGTERM) -> None:
    for service in prepared.services:
        if service.process is not None:
            kill(service.process, sig)
    for service in prepared.services:
        if service.process is None:
            continue
        try:
            await asyncio.wait_for(service.process.wait(), 15)
        except TimeoutError:
            kill(service.process)
            await service.process.wait()
        service.process = None


def service_pids(prepared: Prepared) -> dict[str, int]:
    pids = {}
    for service in prepared.services:
        if service.process is not None and service.process.returncode is None:
            pids[service.name] = service.process.pid
            for child in procs.descendants(service.process.pid):
                pids[f"{service.name}/{child}"] = child
    return pids
