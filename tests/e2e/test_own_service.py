"""docs/own-service.md as written: its shell session run line for line against the real
PostgreSQL and RabbitMQ (only the database, the prefix and the port are this test's
own), its code the example's, its test passing, its deployment files consistent."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from tests.conftest import create_pg_database, drop_pg_database
from tests.e2e.test_run import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "own-service.md"
EXAMPLE = ROOT / "examples" / "own-service"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def blocks(language: str) -> list[str]:
    return [body for lang, body in BLOCK.findall(PAGE.read_text()) if lang == language]


async def test_the_laptop_session_runs_as_written_and_every_booking_ends() -> None:
    (session,) = blocks("sh")
    db = await create_pg_database()
    prefix = f"sagakit-test-howto-{uuid.uuid4().hex[:8]}."
    port = str(free_port())
    script = (
        session.replace("postgresql://postgres@127.0.0.1:5432/concerts", db)
        .replace("prefix=concerts.", f"prefix={prefix}")
        .replace("--prefix concerts.", f"--prefix {prefix}")
        .replace("8081", port)
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SAGAKIT_")}
    environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environ['PATH']}"
    try:
        done = subprocess.run(  # noqa: ASYNC221 - the session is the test
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=ROOT,
            env={**environ, "NO_COLOR": "1"},
            capture_output=True,
            text=True,
            timeout=150,
            check=False,
        )
    finally:
        await drop_pg_database(db)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "compensated 5, completed 15" in done.stdout, output
    assert '{"status":"ready"}' in done.stdout
    finished = 'sagakit_sagas_finished_total{definition="concert-booking",outcome="completed"} 15.0'
    assert finished in done.stdout
    assert "is stopping (grace 10s)" in output
    assert f"removed exchange {prefix}sagakit.events" in done.stdout


def test_the_code_shown_is_the_example_and_its_test_passes() -> None:
    code, harness_test = blocks("python")
    assert code == (EXAMPLE / "concerts" / "service.py").read_text()
    namespace: dict[str, object] = {"__name__": "own_service_docs"}
    exec(compile(code + harness_test, "own-service.md", "exec"), namespace)
    import asyncio

    asyncio.run(namespace["test_a_booking_over_the_card_limit_is_compensated"]())  # type: ignore[operator]


def test_the_platforms_kill_comes_after_the_grace() -> None:
    deployment = yaml.safe_load((EXAMPLE / "k8s" / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {item["name"]: item["value"] for item in container["env"]}
    assert pod["terminationGracePeriodSeconds"] > float(env["SAGAKIT_GRACE"]) + 2
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    compose = yaml.safe_load((EXAMPLE / "compose.yaml").read_text())
    service = compose["services"]["concerts"]
    assert service["stop_grace_period"] == "30s"
    dockerfile = (EXAMPLE / "Dockerfile").read_text()
    assert "SAGAKIT_GRACE=20" in dockerfile
    assert 'CMD ["sagakit", "run", "concerts.service:runtime"]' in dockerfile
