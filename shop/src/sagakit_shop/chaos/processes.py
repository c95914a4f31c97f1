"""The shop's processes for one chaos run, and the wait until they are up.

The payment gateway runs as the outside system it is, and every process the run names
runs as the service it is a replica of (``payment-2`` runs ``payment``), each order
replica serving the API on a port of its own. The supervisor
(:func:`~sagakit_shop.distributed.supervise`) starts them and starts again any that dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

from sagakit_shop.chaos.config import ChaosConfig
from sagakit_shop.chaos.wire import CHAOS_ENV, ServiceChaos
from sagakit_shop.distributed import Child, child_argv


@dataclass
class ShopProcesses:
    """The children a run supervises, and where the load reaches them."""

    children: list[Child]
    #: The first order process's API, the one waited on before the load starts.
    port: int
    #: Every order process's API (the first one's is ``port``): the load takes turns.
    order_ports: list[int]

    @classmethod
    def for_run(
        cls, config: ChaosConfig, *, gateway_books: Path, output: IO[Any] | None
    ) -> ShopProcesses:
        """The run's processes, with their output to ``output`` and the payment gateway's
        books in ``gateway_books``."""
        chaos = ServiceChaos(
            duplicate=config.duplicate,
            reorder=config.reorder,
            seed=config.seed,
            plant=config.plant,
            counts=str(config.directory / "wire"),
        )
        env = {**os.environ, CHAOS_ENV: chaos.to_env()}
        first_port = free_port()
        # The payment gateway runs as the outside system it is, a process of its own with
        # its books in a file, so the checks can see what reached it; the nemesis leaves it
        # be (it is not ours to crash), and payment reaches it over HTTP, as under `up`.
        gateway_port = free_port()
        gateway = Child(
            "gateway",
            [sys.executable, "-m", "sagakit", "service", "gateway",
             "--port", str(gateway_port), "--books", str(gateway_books)],
            output=output,
        )  # fmt: skip
        calls_out = ["--gateway-url", f"http://127.0.0.1:{gateway_port}"]
        children, order_ports = [gateway], []
        for process in config.processes:
            name = process.split("-", 1)[0]  # payment-2 is a replica of payment
            # Each order replica serves the API on a port of its own; the load takes them
            # in turn, and one refusing the connection (killed) sends it to the next.
            port = first_port if process == name else free_port()
            if name == "order":
                order_ports.append(port)
            argv = child_argv(
                name,
                db=config.db,
                broker=config.broker,
                mode=config.mode,
                port=port,
                fail_rate=config.mail_trouble,
                seed=config.seed,
            )
            extra = calls_out if name == "payment" else []
            children.append(Child(process, argv + extra, env=env, output=output))
        return cls(children, first_port, order_ports)

    @property
    def apis(self) -> list[str]:
        """Every order process's API, for the load."""
        return [f"http://127.0.0.1:{port}" for port in self.order_ports]

    async def wait_healthy(self, supervisor: asyncio.Task[None]) -> None:
        """Wait until the order API answers (and the rest have had time to start)."""
        api = f"http://127.0.0.1:{self.port}"
        async with httpx.AsyncClient(timeout=2) as client:
            for _ in range(600):
                if supervisor.done():
                    supervisor.result()
                    raise RuntimeError("the supervisor stopped before the shop came up")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{api}/health")).status_code == 200:
                        await asyncio.sleep(2.0)  # the other consumers finish starting
                        return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"the order API never came up at {api}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
