"""The shop under ``sagakit up`` for the HTTP run: started in a process group and a
scratch directory of its own, its processes' CPU time, ``sagakit verify`` on its books,
and a teardown that removes its processes, databases and broker namespace."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from bench import databases, procs
from bench.shop_http_config import ShopHttpConfig


def broker_url(amqp: str, prefix: str) -> str:
    parts = urlsplit(amqp)
    query = {**dict(parse_qsl(parts.query)), "prefix": prefix}
    return urlunsplit(parts._replace(query=urlencode(query)))


class Shop:
    """``sagakit up`` in a process group of its own, in a scratch directory."""

    def __init__(self, cfg: ShopHttpConfig, replicas: int, log: Path) -> None:
        self.cfg = cfg
        self.replicas = replicas
        self.stem = cfg.stem(replicas)
        self.db = databases.database_url(cfg.pg, self.stem)
        self.broker = broker_url(cfg.amqp, cfg.prefix(replicas))
        self.log = log
        self.home = Path(tempfile.mkdtemp(prefix="benchshop-"))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [sys.executable, "-m", "sagakit", "up", "--db", self.db, "--broker", self.broker,
                "--port", str(self.cfg.port)]  # fmt: skip
        if self.replicas > 1:
            argv += ["--replicas", str(self.replicas)]
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and CLI
                argv, cwd=self.home, stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    async def ready(self, timeout: float = 90.0) -> None:
        """Wait until every order API replica answers (the services started)."""
        import httpx

        url = f"http://127.0.0.1:{self.cfg.port}/health"
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    code = self.process.returncode
                    raise RuntimeError(f"sagakit up exited with {code}; see {self.log}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(url)).status_code == 200:
                        await asyncio.sleep(2)  # the other replicas, the relay, the orchestrator
                        return
                await asyncio.sleep(0.5)
        raise RuntimeError(f"the order API did not answer in {timeout:.0f}s; see {self.log}")

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of each process `sagakit up` runs, by name (``payment``,
        ``payment-2``...; ``up`` itself serves the dashboard)."""
        if self.process is None:
            return {}
        found = {"up": procs.cpu_seconds(self.process.pid)}
        seen: Counter[str] = Counter()
        for pid in sorted(procs.descendants(self.process.pid)):
            try:
                words = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
            except OSError:
                continue
            if "service" in words:
                kind = words[words.index("service") + 1]
                seen[kind] += 1
                name = kind if seen[kind] == 1 else f"{kind}-{seen[kind]}"
                found[name] = procs.cpu_seconds(pid)
        return found

    def verify(self) -> dict[str, Any]:
        done = subprocess.run(  # noqa: S603 - our own interpreter and CLI
            [sys.executable, "-m", "sagakit", "verify", "--db", self.db, "--json"],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        try:
            report: dict[str, Any] = json.loads(done.stdout)
        except ValueError:
            report = {"error": (done.stderr or done.stdout).strip()[-500:]}
        report["holds"] = done.returncode == 0
        return report

    def stop(self) -> None:
        """Stop `sagakit up` (it stops its children), by force if it does not in time."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    async def teardown(self) -> list[str]:
        """Processes, databases, the broker namespace and the scratch directory: gone.
        Each is tried whatever happened to the others; returns what stays, and how to
        remove it by hand."""
        stays = []
        await asyncio.to_thread(self.stop)
        try:
            await databases.drop_prefixed(self.cfg.pg, f"{self.stem}_")
        except (OSError, asyncpg.PostgresError) as exc:
            stays.append(f"databases {self.stem}_* stay ({exc}); drop them by hand")
        try:
            await asyncio.to_thread(self._remove_namespace)
        except RuntimeError as exc:
            prefix = self.cfg.prefix(self.replicas)
            stays.append(
                f"{exc}; later: sagakit broker teardown --prefix {prefix} "
                "--definitions sagakit_shop.saga:ORDER_SAGA --force"
            )
        shutil.rmtree(self.home, ignore_errors=True)
        return stays

    def _remove_namespace(self) -> None:
        done = subprocess.run(  # noqa: S603 - our own interpreter and CLI
            [sys.executable, "-m", "sagakit", "broker", "teardown",
             "--prefix", self.cfg.prefix(self.replicas), "--broker", self.cfg.amqp,
             "--definitions", "sagakit_shop.saga:ORDER_SAGA", "--force"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if done.returncode:
            said = done.stderr.strip().splitlines()[-1:] or ["no reason given"]
            raise RuntimeError(f"the broker namespace stays: {said[0]}")


async def prepare_world(db: str, orders: int) -> None:
    """The shop's databases and world, with stock for ``orders`` orders (``up`` finds
    them seeded and leaves them be)."""
    from sagakit_shop.distributed import prepare

    await prepare(db, orders_hint=orders)
