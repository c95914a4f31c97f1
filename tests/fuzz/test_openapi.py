"""Both HTTP APIs fuzzed from their own OpenAPI documents (Schemathesis): whatever a
client sends, no answer is a 5xx, and every answer matches the status codes, media types
and schemas the document declares; without a token, with a viewer's and an operator's.

Each API runs on loopback in a thread of its own (its event loop owns its stores), so
Schemathesis calls it over real HTTP. Examples are bounded and derandomized: the same
cases every run, well under a minute for both.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import uvicorn
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from sagakit.api import AdminConfig, create_admin_app, parse_tokens
from sagakit.stores import open_store
from sagakit.stores.dead_letters import SqlDeadLetters
from sagakit_shop.api import create_app
from sagakit_shop.app import Shop, embedded_urls, open_stores
from sagakit_shop.world import default_world
from tests.sagas import CHECKOUT

OPERATOR = "fuzz-operator-secret-0123456789"
VIEWER = "fuzz-viewer-secret-0123456789ab"
TOKENS = parse_tokens(f"operator:olga:{OPERATOR}, viewer:victor:{VIEWER}")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
WHO = [{}, {"Authorization": f"Bearer {VIEWER}"}, {"Authorization": f"Bearer {OPERATOR}"}]
BOUNDED = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def tmp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def serving(build: Callable[[], Any]) -> Iterator[str]:
    """Run the app ``build()`` yields (an async context manager) on loopback in a
    thread of its own until the tests are done; yields its base URL."""
    port = _free_port()
    started = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        async with build() as app:
            server = uvicorn.Server(
                uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
            )
            state["server"] = server
            task = asyncio.create_task(server.serve())
            while not server.started and not task.done():  # noqa: ASYNC110 - no event offered
                await asyncio.sleep(0.01)
            started.set()
            await task

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(30), "the API did not start"
    yield f"http://127.0.0.1:{port}"
    state["server"].should_exit = True
    thread.join(10)


def _admin_app(store_url: str) -> FastAPI:
    store = open_store(store_url)
    return create_admin_app(
        AdminConfig(
            saga_store=store,
            definitions=[CHECKOUT],
            tokens=TOKENS,
            dead_letters=SqlDeadLetters(store),
            poll=0.05,
        )
    )


@pytest.fixture(scope="module")
def admin_url(tmp_dir: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_dir / 'admin.db'}"

    @asynccontextmanager
    async def build() -> AsyncIterator[FastAPI]:
        app = _admin_app(url)
        store = app.state.admin.saga_store
        await store.migrate()
        yield app
        await store.close()

    yield from serving(build)


@pytest.fixture(scope="module")
def shop_url(tmp_dir: Path) -> Iterator[str]:
    @asynccontextmanager
    async def build() -> AsyncIterator[FastAPI]:
        shop = Shop(open_stores(embedded_urls(tmp_dir / "shop")))
        await shop.setup(default_world(orders=10))
        yield create_app(shop)  # orders are placed; no runtime drives their sagas here
        await shop.close()

    (tmp_dir / "shop").mkdir(exist_ok=True)
    yield from serving(build)


# The documents come from the apps themselves, built over stores never opened.
ADMIN = schemathesis.openapi.from_dict(
    _admin_app("sqlite:////nonexistent/never-opened.db").openapi()
).exclude(path="/api/stream")  # endless by design; test_admin_api reads it
SHOP = schemathesis.openapi.from_dict(
    create_app(Shop(open_stores(embedded_urls(Path("/nonexistent"))))).openapi()
)


def _call(case: Any, base_url: str) -> None:
    for headers in WHO:
        started = time.monotonic()
        case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS, timeout=10)
        assert time.monotonic() - started < 10


@ADMIN.parametrize()
@BOUNDED
def test_the_admin_api_answers_every_request_as_its_document_says(
    case: Any, admin_url: str
) -> None:
    _call(case, admin_url)


@SHOP.parametrize()
@BOUNDED
def test_the_order_api_answers_every_request_as_its_document_says(case: Any, shop_url: str) -> None:
    _call(case, shop_url)


def test_both_documents_declare_how_to_authenticate_or_that_none_is_needed() -> None:
    schemes = ADMIN.raw_schema["components"]["securitySchemes"]
    assert schemes["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schemes["HTTPBearer"]["description"],
    }
    assert schemes["APIKeyCookie"]["in"] == "cookie"
    admin_routes = [op for path in ADMIN.raw_schema["paths"].values() for op in path.values()]
    assert all({"HTTPBearer": []} in op["security"] for op in admin_routes)
