"""The foreign folder: Node.js programs the tests run (a participant written from
docs/protocol.md, the AsyncAPI checks), with their npm packages installed by `npm ci`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import unavailable

HERE = Path(__file__).resolve().parent
INSTALLED = HERE / "node_modules" / ".package-lock.json"


def node() -> str:
    found = shutil.which("node")
    if found is None:
        unavailable("node", "no `node` on PATH (it builds the dashboard too)")
    return str(found)


@pytest.fixture(scope="session")
def node_packages() -> Path:
    """This folder, with its npm packages installed as its lock file says (what `make
    setup` does; a test run on its own does it here)."""
    node()
    lock = HERE / "package-lock.json"
    if not INSTALLED.exists() or INSTALLED.stat().st_mtime < lock.stat().st_mtime:
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=HERE, check=True, capture_output=True
        )
        INSTALLED.touch()
    return HERE


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not true after {timeout}s: {check.__qualname__}")
        await asyncio.sleep(0.05)


def run_node(script: str, *args: str) -> tuple[int, dict[str, Any]]:
    """Run a script of this folder; its exit code and the JSON object it printed last."""
    done = subprocess.run(
        [node(), str(HERE / script), *args], capture_output=True, text=True, timeout=60, check=False
    )
    lines = done.stdout.strip().splitlines()
    assert lines, f"{script} printed nothing:\n{done.stderr}"
    return done.returncode, json.loads(lines[-1])


class NodeProcess:
    """A Node.js participant running as a process of its own, its output kept."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._reading = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip())

    async def ready(self, timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout):
            while not any(line.startswith("ready:") for line in self.lines):
                if self.process.returncode is not None or self._reading.done():
                    await self._reading
                    raise AssertionError("the participant died:\n" + "\n".join(self.lines))
                await asyncio.sleep(0.05)

    async def stop(self) -> int:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        await self._reading
        return self.process.returncode or 0


@contextlib.asynccontextmanager
async def node_participant(script: str, env: Mapping[str, str]) -> AsyncIterator[NodeProcess]:
    process = await asyncio.create_subprocess_exec(
        node(),
        str(HERE / script),
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    running = NodeProcess(process)
    try:
        await running.ready()
        yield running
    finally:
        code = await running.stop()
        assert code == 0, "the participant did not stop cleanly:\n" + "\n".join(running.lines)
