"""The shop end to end over HTTP: ``sagakit bench --shop-http`` (or ``python -m bench.shop_http``).

For each replica count asked for, the shop runs under ``sagakit up`` on PostgreSQL and
RabbitMQ, in databases and a queue prefix of the run's own. A standard HTTP load
generator (wrk, or hey) posts orders from ``--connections`` clients for ``--duration``
seconds; its own output gives the POSTs per second and their latency. The stores then
give the end-to-end figures: orders per second from the first POST to the last saga
reaching its end, and each order's time from its POST to its saga's end. ``sagakit
verify`` checks the books afterwards. Whatever happens, the processes are stopped, the
databases dropped and the broker namespace removed.

The shop's process is :mod:`bench.shop_process`, the load generators and their
reports :mod:`bench.load_generators`, the settings :mod:`bench.shop_http_config`, and
the files written :mod:`bench.shop_http_report`; this module runs them in turn.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from bench import databases
from bench.load_generators import (
    CUSTOMERS,
    GENERATORS,
    PARSERS,
    SKU,
    WRK_SCRIPT,
    Generated,
    generator_argv,
    missing_generator,
    parse_hey,
    parse_wrk,
    wrk_script,
)
from bench.shop_http_config import ShopHttpConfig
from bench.shop_http_report import HEADER, cpu_table, holds, table, write
from bench.shop_process import Shop, broker_url, prepare_world

__all__ = [
    "CUSTOMERS",
    "GENERATORS",
    "HEADER",
    "PARSERS",
    "SKU",
    "TERMINAL",
    "WRK_SCRIPT",
    "Generated",
    "Shop",
    "ShopHttpConfig",
    "broker_url",
    "cpu_table",
    "end_to_end",
    "generator_argv",
    "holds",
    "main",
    "missing_generator",
    "parse_hey",
    "parse_wrk",
    "prepare_world",
    "run_one",
    "run_shop_http",
    "table",
    "write",
    "wrk_script",
]

TERMINAL = ("completed", "compensated", "needs_attention", "resolved")


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def end_to_end(
    pg: str, stem: str, settle: float, say: Callable[[str], None]
) -> dict[str, Any]:
    """Wait up to ``settle`` seconds for every order's saga to end, then the figures:
    orders per second from the first POST to the last end, and each order's time from
    its POST to its saga's end."""
    saga_db = databases.database_url(pg, f"{stem}_saga")
    order_db = databases.database_url(pg, f"{stem}_order")
    deadline = time.monotonic() + settle
    async with databases.connect(order_db) as orders, databases.connect(saga_db) as sagas:
        while True:  # placed again each time: a POST the generator gave up on may land late
            placed = dict(await orders.fetch("SELECT id, created_at FROM orders"))
            ended = dict(
                await sagas.fetch(
                    "SELECT saga_id, updated_at FROM sagas WHERE status = ANY($1::text[])",
                    list(TERMINAL),
                )
            )
            waiting = sum(1 for order in placed if order not in ended)
            if not waiting or time.monotonic() > deadline:
                break
            say(f"{len(placed) - waiting:,} of {len(placed):,} sagas ended")
            await asyncio.sleep(2)
        statuses = dict(await sagas.fetch("SELECT status, count(*) FROM sagas GROUP BY status"))
    done = [(placed[o], ended[o]) for o in placed if o in ended]
    first = min((p for p, _ in done), default=0.0)
    last = max((e for _, e in done), default=0.0)
    latencies = sorted((e - p) * 1000 for p, e in done)
    return {
        "orders": len(placed),
        "ended": len(done),
        "not_ended": waiting,
        "statuses": {str(k): int(v) for k, v in statuses.items()},
        "e2e_per_s": round(len(done) / (last - first), 1) if last > first else 0.0,
        "e2e_p50_ms": round(_quantile(latencies, 0.5), 1),
        "e2e_p99_ms": round(_quantile(latencies, 0.99), 1),
    }


async def run_one(cfg: ShopHttpConfig, replicas: int, say: Callable[[str], None]) -> dict[str, Any]:
    logs = cfg.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    shop = Shop(cfg, replicas, logs / f"shop-http-r{replicas}.log")
    script = shop.home / "post.lua"
    script.write_text(wrk_script())
    try:
        say(f"{replicas} replica(s): preparing databases {shop.stem}_*")
        await prepare_world(shop.db, orders=max(1000, int(cfg.duration * 1500)))
        shop.start()
        await shop.ready()
        url = f"http://127.0.0.1:{cfg.port}/orders"
        what = f"{cfg.generator}, {cfg.connections} clients, {cfg.duration:.0f}s on {url}"
        say(f"{replicas} replica(s): {what}")
        cpu_before = shop.cpu()
        load = await asyncio.to_thread(
            subprocess.run, generator_argv(cfg, url, script),
            capture_output=True, text=True, timeout=cfg.duration + 120, check=False,
        )  # fmt: skip
        (logs / f"shop-http-r{replicas}-{cfg.generator}.txt").write_text(load.stdout + load.stderr)
        generated = PARSERS[cfg.generator](load.stdout)
        say(f"{replicas} replica(s): {generated.per_s:,.0f} POST/s; waiting for the sagas")
        e2e = await end_to_end(cfg.pg, shop.stem, cfg.settle, say)
        cpu = {n: t - cpu_before.get(n, 0.0) for n, t in shop.cpu().items()}
        per_order = {n: round(t * 1000 / max(1, e2e["orders"]), 2) for n, t in cpu.items()}
        say(
            f"{replicas} replica(s): {e2e['ended']:,} of {e2e['orders']:,} orders ended, "
            f"{e2e['e2e_per_s']:,.1f}/s end to end, p50 {e2e['e2e_p50_ms']:,.0f} ms"
        )
        say(f"{replicas} replica(s): CPU ms per order: {per_order}")
        say(f"{replicas} replica(s): sagakit verify")
        shop.stop()  # verify reads settled books
        verdict = shop.verify()
        return {
            "replicas": replicas,
            "generator": cfg.generator,
            "connections": cfg.connections,
            "duration_s": cfg.duration,
            "http": asdict(generated),
            "end_to_end": e2e,
            "verify": verdict,
            "cpu_ms_per_order": per_order,
            "load_average": os.getloadavg(),
        }
    finally:
        say(f"{replicas} replica(s): tearing down")
        for left in await shop.teardown():
            say(f"[red]{left}[/]")


async def run_shop_http(cfg: ShopHttpConfig, say: Callable[[str], None]) -> list[dict[str, Any]]:
    results = []
    for replicas in cfg.replicas:
        before = os.getloadavg()
        try:
            result = await run_one(cfg, replicas, say)
        except Exception as exc:  # the other replica counts still run, and this says why
            say(f"[red]{replicas} replica(s): {type(exc).__name__}: {exc}[/]")
            result = {"replicas": replicas, "error": f"{type(exc).__name__}: {exc}"}
        result["load_average_before"] = before
        results.append(result)
        write(cfg, results)  # what is measured so far survives a later run's trouble
    return results


def main() -> None:
    """``python -m bench.shop_http``: ``sagakit bench --shop-http`` with its options."""
    import typer

    from bench.cli import bench

    sys.argv.insert(1, "--shop-http")
    typer.run(bench)


if __name__ == "__main__":
    main()
