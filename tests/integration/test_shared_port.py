"""Replicas of an HTTP API on one host, on one port: both bind, and when one stops the
other still answers at the same address."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httpx

from sagakit.service import http_server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def replica(name: str) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": name.encode()})

    return app


async def ask(url: str) -> str:
    # a fresh connection each time, as the kernel spreads connections, not requests
    async with httpx.AsyncClient(timeout=5) as client:
        return (await client.get(url)).text


async def test_replicas_share_a_port_and_the_one_left_keeps_answering() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    servers = [
        http_server(replica(name), host="127.0.0.1", port=port, share_port=True)
        for name in ("first", "second")
    ]
    serving = [asyncio.create_task(server.serve()) for server in servers]
    try:
        for _ in range(200):
            if all(server.started for server in servers):
                break
            await asyncio.sleep(0.02)
        assert all(server.started for server in servers)
        assert {await ask(url) for _ in range(20)} <= {"first", "second"}

        servers[0].should_exit = True
        await serving[0]
        assert {await ask(url) for _ in range(10)} == {"second"}
    finally:
        for server in servers:
            server.should_exit = True
        await asyncio.gather(*serving, return_exceptions=True)
