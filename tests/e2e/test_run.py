"""``sagakit run MODULE:ATTR``: a service of one's own as real processes over PostgreSQL and
RabbitMQ, its probes, and a stop by SIGTERM in the middle of the load that loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from sagakit import Orchestrator, SagaHandle, UnknownSagaError, open_store
from sagakit.stores.sql import SqlSagaStore
from sagakit.transports.rabbit_namespace import connected, remove, survey, work_queues
from sagakit.transports.rabbitmq import RabbitTransport
from tests.conftest import AMQP_URL, create_pg_database, drop_pg_database
from tests.e2e.helpers import SAGAKIT, sagakit
from tests.e2e.service_app import BOOKING

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
GRACE = 3.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Service:
    """One `sagakit run` process with its health port."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.port = free_port()
        self.log = open(  # noqa: SIM115 - closed in stop(), after the process ends
            Path(env["SERVICE_LOGS"]) / f"run-{self.port}.log", "w+"
        )
        self.process = subprocess.Popen(
            [SAGAKIT, "run", "tests.e2e.service_app:factory", *args],
            env={**env, "SAGAKIT_HEALTH_PORT": str(self.port), "SAGAKIT_GRACE": str(GRACE)},
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                assert self.process.poll() is None, self.output()
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(self.url("/readyz"))).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise AssertionError(f"not ready in {timeout}s:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    async def terminate(self) -> tuple[int, float]:
        """SIGTERM; the exit code and the seconds it took to exit."""
        began = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(self.process.wait, 30)
        return code, time.monotonic() - began

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture
async def service_env(tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    db = await create_pg_database()
    prefix = f"sagakit-test-run-{uuid.uuid4().hex[:8]}."
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SAGAKIT_")}
    environ.update(
        SERVICE_DB=db,
        SERVICE_BROKER=f"{AMQP_URL}?prefix={prefix}",
        SERVICE_LOGS=str(tmp_path),
        SERVICE_CHARGE_SECONDS="0.3",
        NO_COLOR="1",
    )
    try:
        yield environ
    finally:
        transport = RabbitTransport(AMQP_URL, prefix=prefix)
        async with connected(transport) as connection:
            namespace = await survey(connection, transport, work_queues([BOOKING]))
            await remove(connection, namespace)
        await drop_pg_database(db)


def test_a_store_not_migrated_stops_the_start_with_the_fix(service_env: dict[str, str]) -> None:
    env = {k: v for k, v in service_env.items() if k.startswith("SERVICE_")}
    result = sagakit("run", "tests.e2e.service_app:factory", env=env, cwd=ROOT)
    assert result.code == 1, str(result)
    assert result.err.count("\n") == 1, str(result)  # one line
    assert f"run `sagakit migrate --db {service_env['SERVICE_DB']}`" in result.err


async def test_replicas_share_the_work_and_a_sigterm_loses_no_saga(
    service_env: dict[str, str],
) -> None:
    first = Service(service_env, "--migrate")
    second: Service | None = None
    store = open_store(service_env["SERVICE_DB"])
    try:
        await first.ready()
        second = Service(service_env)
        await second.ready()
        async with httpx.AsyncClient() as client:
            alive = await client.get(first.url("/healthz"))
            assert (alive.status_code, alive.json()) == (200, {"status": "alive"})

            orchestrator = Orchestrator(store, [BOOKING])
            handles = [await orchestrator.start("booking", {"seats": 2}) for _ in range(60)]
            await asyncio.sleep(1.0)  # some done, some in the middle of a charge
            statuses = await store.statuses(handles)
            assert "running" in statuses.values()  # mid-load
            code, took = await first.terminate()
            assert code == 0, first.output()
            assert took < GRACE + 2, f"took {took:.1f}s to stop:\n{first.output()}"
            assert "is stopping (grace 3s)" in first.output()

            ended = await store.wait_ended(handles, timeout=60)
            assert set(ended.values()) == {"completed"}, ended

            ready = await client.get(second.url("/readyz"))
            assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
            metrics = (await client.get(second.url("/metrics"))).text
            assert 'sagakit_sagas_finished_total{definition="booking",outcome="completed"}' in (
                metrics
            )
            assert "sagakit_outbox_unsent{" in metrics
        code, _ = await second.terminate()
        assert code == 0, second.output()
    finally:
        for service in (first, second):
            if service is not None:
                service.kill()
        await store.close()


@pytest.mark.parametrize(
    ("target", "said"),
    [
        ("nothing", "'nothing': give MODULE:ATTR, e.g. concerts.service:runtime"),
        ("no_such_module:app", "'no_such_module:app': no module named 'no_such_module'"),
        ("tests.e2e.service_app:nope", "tests.e2e.service_app has no attribute 'nope'"),
        ("tests.e2e.service_app:QUICK", "is a RetryPolicy, not a Runtime or a factory"),
    ],
)
def test_a_target_that_is_no_runtime_is_one_line_naming_it(target: str, said: str) -> None:
    result = sagakit("run", target, cwd=ROOT)
    assert result.code == 2, str(result)
    assert result.err.count("\n") == 1
    assert said in result.err


async def test_an_async_factory_runs_and_its_unserved_participants_are_named(
    tmp_path: Path,
) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SAGAKIT_")}
    environ.update(
        SERVICE_DB=f"sqlite:///{tmp_path}/booking.db", SERVICE_BROKER="memory://", NO_COLOR="1"
    )
    log = (tmp_path / "run.log").open("w+")
    process = subprocess.Popen(  # noqa: ASYNC220 - returns at once; waited on off the loop
        [SAGAKIT, "run", "tests.e2e.service_app:orchestrator_only", "--grace", "1"],
        env=environ,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while "is up" not in (tmp_path / "run.log").read_text():
            assert process.poll() is None and time.monotonic() < deadline
            await asyncio.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 10) == 0
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    output = (tmp_path / "run.log").read_text()
    for participant in ("card", "seats"):
        assert (
            f"name participant '{participant}', but nothing in this process serves it "
            "(in-process transport)" in output
        ), output
    assert "queues sagakit.replies.orchestrator; stores sqlite:///" in output


async def requested(store: SqlSagaStore, saga_id: str) -> set[str]:
    """The steps a saga has asked for so far (none while it has not started)."""
    with contextlib.suppress(UnknownSagaError):
        return set((await store.get(saga_id)).steps)
    return set()


def read(log: Path) -> str:
    """A process's output so far (a small file: read at once)."""
    return log.read_text()


async def test_a_second_signal_while_stopping_ends_the_process_at_once(tmp_path: Path) -> None:
    """A handler runs for seconds and the grace is long: the first SIGTERM waits for it,
    a second one ends the process straight away, and the saga is not lost (the next
    run of the service finishes it)."""
    db = f"sqlite:///{tmp_path}/booking.db"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SAGAKIT_")}
    environ.update(
        SERVICE_DB=db, SERVICE_BROKER="memory://", SERVICE_CHARGE_SECONDS="6", NO_COLOR="1"
    )

    def run(log_name: str) -> tuple[subprocess.Popen[bytes], Path]:
        log = tmp_path / log_name
        with log.open("w") as out:
            process = subprocess.Popen(
                [SAGAKIT, "run", "tests.e2e.service_app:factory", "--grace", "30", "--migrate"],
                env=environ,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return process, log

    async def said(log: Path, text: str, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + 30
        while text not in read(log):
            assert process.poll() is None and time.monotonic() < deadline, read(log)
            await asyncio.sleep(0.05)

    first, log = run("first.log")
    try:
        await said(log, "is up", first)
        store = open_store(db)
        orchestrator = Orchestrator(store, [BOOKING])
        async with store.unit() as unit:
            await unit.enqueue([orchestrator.start_message("booking", {}, saga_id="b1")])
        deadline = time.monotonic() + 20
        while "charge" not in await requested(store, "b1"):
            assert time.monotonic() < deadline, read(log)
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # the charge's handler is asleep now, for six seconds
        first.send_signal(signal.SIGTERM)
        await said(log, "is stopping (grace 30s)", first)
        began = time.monotonic()
        first.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(first.wait, 10)
        assert time.monotonic() - began < 2, read(log)
        assert code == 128 + signal.SIGTERM
        assert "SIGTERM again while stopping; exiting now" in read(log)
        assert (await store.get("b1")).status.value == "running"
        second, _ = run("second.log")
        try:
            status = await SagaHandle("b1", store).outcome(timeout=30)
        finally:
            second.send_signal(signal.SIGINT)
            await asyncio.to_thread(second.wait, 40)
        assert status.value == "completed"
        await store.close()
    finally:
        if first.poll() is None:
            first.kill()
