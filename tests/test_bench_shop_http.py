"""The bench's HTTP mode for the shop, in the parts that run fast: its options, reading
the load generators' reports, and the teardown that leaves nothing behind."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
import pytest
from typer.testing import CliRunner

from bench import databases
from bench.shop_http import Shop, ShopHttpConfig, broker_url, parse_hey, parse_wrk
from sagakit.transports.rabbit_namespace import connected, probe
from tests.conftest import AMQP_URL, PG_ADMIN, open_rabbit

# Real reports: wrk against the shop with some requests timing out, hey against a
# server that answers every POST with 501.
WRK = """\
Running 10s test @ http://127.0.0.1:18600/orders
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.42s   429.34ms   1.96s    63.24%
    Req/Sec    14.31     11.03    50.00     67.96%
  Latency Distribution
     50%    1.59s
     75%    1.76s
     90%  900.50ms
     99%    1.96s
  185 requests in 10.02s, 110.80KB read
  Socket errors: connect 0, read 0, write 0, timeout 117
  Non-2xx or 3xx responses: 3
Requests/sec:     18.45
Transfer/sec:     11.05KB
"""

HEY = """\

Summary:
  Total:\t0.0589 secs
  Slowest:\t0.0166 secs
  Fastest:\t0.0016 secs
  Average:\t0.0057 secs
  Requests/sec:\t678.5795

Latency distribution:
  10% in 0.0020 secs
  25% in 0.0026 secs
  50% in 0.0038 secs
  75% in 0.0079 secs
  90% in 0.0155 secs
  95% in 0.0163 secs
  0% in 0.0000 secs

Status code distribution:
  [201]\t35 responses
  [501]\t5 responses

Error distribution:
  [2]\tPost "http://127.0.0.1:18799/": dial tcp 127.0.0.1:18799: connect: connection refused
"""


def test_wrk_report_gives_rate_latency_and_every_kind_of_error() -> None:
    found = parse_wrk(WRK)
    assert (found.requests, found.seconds, found.per_s) == (185, 10.02, 18.45)
    assert (found.p50_ms, found.p90_ms, found.p99_ms) == (1590.0, 900.5, 1960.0)
    assert found.errors == 117 + 3


def test_hey_report_gives_rate_latency_and_every_kind_of_error() -> None:
    found = parse_hey(HEY)
    assert (found.requests, found.per_s) == (40, 678.5795)
    assert found.p50_ms == pytest.approx(3.8)
    assert found.p99_ms == pytest.approx(16.6)  # too few for a 99th: the slowest
    assert found.errors == 5 + 2


def test_a_report_that_is_not_one_is_refused() -> None:
    with pytest.raises(ValueError, match="no wrk report"):
        parse_wrk("unable to connect to 127.0.0.1:18600 Connection refused")
    with pytest.raises(ValueError, match="no hey summary"):
        parse_hey("")


def _bench(args: list[str]) -> tuple[int, str]:
    from sagakit.cli.app import app  # `sagakit bench` joins it through its entry point

    result = CliRunner().invoke(app, ["bench", "--shop-http", *args])
    return result.exit_code, result.output


def test_a_missing_generator_is_one_line_saying_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on it
    code, output = _bench(["--generator", "hey", "--out", str(tmp_path / "out")])
    assert code == 2
    assert (
        output.strip()
        == "error: hey is not installed: apt-get install -y hey (or choose --generator wrk)"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "hint"),
    [(["--replicas", "1,0"], "--replicas"), (["--generator", "ab"], "--generator")],
)
def test_bad_options_are_refused_before_anything_starts(
    tmp_path: Path, args: list[str], hint: str
) -> None:
    code, output = _bench([*args, "--out", str(tmp_path / "out")])
    assert code == 2
    assert hint in output
    assert not (tmp_path / "out").exists()


def test_the_broker_namespace_is_the_run_and_replica_count_of_its_own() -> None:
    cfg = ShopHttpConfig(run_id="abc123")
    url = broker_url("amqp://guest:guest@127.0.0.1:5672/%2F?heartbeat=30", cfg.prefix(2))
    assert url == "amqp://guest:guest@127.0.0.1:5672/%2F?heartbeat=30&prefix=benchshop-abc123-r2."
    assert cfg.stem(2) == "benchshop_abc123_r2"


@pytest.mark.postgres
async def test_teardown_drops_the_databases_and_the_queues(tmp_path: Path) -> None:
    cfg = ShopHttpConfig(pg=PG_ADMIN, amqp=AMQP_URL, run_id=uuid.uuid4().hex[:6], out=tmp_path)
    shop = Shop(cfg, 1, tmp_path / "shop.log")
    for name in ("saga", "order"):
        await databases.create(PG_ADMIN, f"{shop.stem}_{name}")
    rabbit = await open_rabbit(AMQP_URL, prefix=cfg.prefix(1))
    try:
        await rabbit.declare("sagakit.commands.payment")
    finally:
        await rabbit.close()
    home = shop.home
    assert home.is_dir()

    await shop.teardown()

    conn = await asyncpg.connect(PG_ADMIN)
    try:
        left = await conn.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE $1", f"{shop.stem}%"
        )
    finally:
        await conn.close()
    assert left == []
    assert not home.exists()
    async with connected(rabbit) as connection:
        assert await probe(connection, rabbit.name("sagakit.commands.payment")) is None


def test_the_cpu_table_adds_up_the_replicas_of_each_kind() -> None:
    from bench.shop_http import cpu_table

    runs = [
        {"replicas": 1, "cpu_ms_per_order": {"payment": 4.0, "saga": 2.0}},
        {"replicas": 2, "cpu_ms_per_order": {"payment": 2.5, "payment-2": 3.0, "saga": 2.0}},
    ]
    rows = cpu_table(runs).splitlines()
    assert rows[0] == "| CPU ms per order | payment | saga | all |"
    assert rows[2:] == ["| 1 replica(s) | 4.0 | 2.0 | 6.0 |", "| 2 replica(s) | 5.5 | 2.0 | 7.5 |"]


def test_a_run_that_failed_is_a_row_saying_why() -> None:
    from bench.shop_http import cpu_table, holds, table

    failed = [{"replicas": 2, "error": "TooManyConnectionsError: sorry", "load_average_before": []}]
    assert table(failed).splitlines()[-1] == "| 2 | TooManyConnectionsError: sorry |"
    assert cpu_table(failed) == ""
    assert not holds(failed)
