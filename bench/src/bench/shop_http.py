"""The shop end to end over HTTP: ``sagakit bench --shop-http`` (or ``python -m bench.shop_http``).

For each replica count asked for, the shop runs under ``sagakit up`` on PostgreSQL and
RabbitMQ, in databases and a queue prefix of the run's own. A standard HTTP load
generator (wrk, or hey) posts orders from ``--connections`` clients for ``--duration``
seconds; its own output gives the POSTs per second and their latency. The stores then
give the end-to-end figures: orders per second from the first POST to the last saga
reaching its end, and each order's time from its POST to its saga's end. ``sagakit
verify`` checks the books afterwards. Whatever happens, the processes are stopped, the
databases dropped and the broker namespace removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from bench import databases, procs

#: The load generators the mode knows, and how to install each (Debian).
GENERATORS = {"wrk": "apt-get install -y wrk", "hey": "apt-get install -y hey"}

#: Customers who can pay for many cheap orders in the shop's default world, and the item
#: with the deepest stock: the load is orders that should complete, as on a good day.
CUSTOMERS = ("c-ada", "c-grace", "c-edsger", "c-barbara")
SKU = "mug"

TERMINAL = ("completed", "compensated", "needs_attention", "resolved")

#: wrk posts an order per request, taking the customers in turn.
WRK_SCRIPT = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local customers = {%s}
local sku = "%s"
local n = 0
request = function()
  n = n + 1
  local who = customers[n %% #customers + 1]
  local body = '{"customer_id": "' .. who .. '", "sku": "' .. sku .. '", "quantity": 1}'
  return wrk.format(nil, nil, nil, body)
end
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class ShopHttpConfig:
    pg: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    amqp: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    generator: str = "wrk"
    connections: int = 64
    duration: float = 20.0
    replicas: Sequence[int] = (1,)
    #: The order API's port; `sagakit up` takes the four after it too.
    port: int = 18600
    #: Seconds the sagas get, after the load, to reach their end.
    settle: float = 120.0
    out: Path = Path("bench/results")
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:6])

    def stem(self, replicas: int) -> str:
        return f"benchshop_{self.run_id}_r{replicas}"

    def prefix(self, replicas: int) -> str:
        return f"benchshop-{self.run_id}-r{replicas}."


@dataclass(frozen=True, slots=True)
class Generated:
    """What the load generator says it did."""

    requests: int
    seconds: float
    per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    #: Responses that were not 2xx, and requests that got no response at all.
    errors: int


# ------------------------------------------------------------------ the generator


def missing_generator(name: str) -> str | None:
    """One line saying how to install ``name``, if it is not on the PATH."""
    if shutil.which(name) is not None:
        return None
    other = next(g for g in GENERATORS if g != name)
    return f"{name} is not installed: {GENERATORS[name]} (or choose --generator {other})"


def generator_argv(cfg: ShopHttpConfig, url: str, script: Path) -> list[str]:
    seconds = f"{max(1, round(cfg.duration))}s"
    if cfg.generator == "wrk":
        threads = str(min(2, cfg.connections))
        argv = ["wrk", "-t", threads, "-c", str(cfg.connections), "-d", seconds, "--timeout", "30s"]
        return [*argv, "--latency", "-s", str(script), url]
    body = json.dumps({"customer_id": CUSTOMERS[0], "sku": SKU, "quantity": 1})
    return ["hey", "-z", seconds, "-c", str(cfg.connections), "-m", "POST",
            "-T", "application/json", "-d", body, url]  # fmt: skip


def wrk_script() -> str:
    names = ", ".join(f'"{c}"' for c in CUSTOMERS)
    return WRK_SCRIPT % (names, SKU)


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _wrk_ms(text: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if found is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(found[1]) * _UNITS_MS[found[2]]


def parse_wrk(output: str) -> Generated:
    """The figures of ``wrk --latency``'s report."""
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m),", output)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if done is None or rate is None:
        raise ValueError(f"no wrk report in: {output[:200]!r}")
    latency = {int(m[1]): _wrk_ms(m[2]) for m in re.finditer(r"^\s+(\d+)%\s+(\S+)", output, re.M)}
    errors = sum(
        int(n)
        for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output)
        + re.findall(r"Non-2xx or 3xx responses: (\d+)", output)
    )
    return Generated(
        requests=int(done[1]),
        seconds=_wrk_ms(done[2] + done[3]) / 1000,
        per_s=float(rate[1]),
        p50_ms=latency[50],
        p90_ms=latency[90],
        p99_ms=latency[99],
        errors=errors,
    )


def parse_hey(output: str) -> Generated:
    """The figures of hey's summary."""
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"Total:\s+([\d.]+) secs", output)
    slowest = re.search(r"Slowest:\s+([\d.]+) secs", output)
    if rate is None or total is None or slowest is None:
        raise ValueError(f"no hey summary in: {output[:200]!r}")
    latency = {
        int(m[1]): float(m[2]) * 1000
        for m in re.finditer(r"^\s+(\d+)%+ in ([\d.]+) secs", output, re.M)
    }
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", output)}
    failed = re.search(r"Error distribution:(.*)", output, re.S)
    errors = sum(n for c, n in codes.items() if not 200 <= c < 300)
    if failed:
        errors += sum(int(n) for n in re.findall(r"^\s+\[(\d+)\]", failed[1], re.M))
    return Generated(
        requests=sum(codes.values()),
        seconds=float(total[1]),
        per_s=float(rate[1]),
        p50_ms=latency[50],
        p90_ms=latency[90],
        # hey leaves the 99th out when it has too few requests for one: the slowest then
        p99_ms=latency.get(99) or float(slowest[1]) * 1000,
        errors=errors,
    )


PARSERS: dict[str, Callable[[str], Generated]] = {"wrk": parse_wrk, "hey": parse_hey}


# ------------------------------------------------------------------ one run


def broker_url(amqp: str, prefix: str) -> str:
    parts = urlsplit(amqp)
    query = {**dict(parse_qsl(parts.query)), "prefix": prefix}
    return urlunsplit(parts._replace(query=urlencode(query)))


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


# ------------------------------------------------------------------ the report

HEADER = (
    "| replicas | POST/s | POST p50 / p90 / p99 ms | HTTP errors | orders | e2e orders/s "
    "| e2e p50 / p99 ms | not ended | verify | load before / after |"
)


def table(results: Sequence[dict[str, Any]]) -> str:
    """The runs as a Markdown table."""
    lines = [HEADER, "|" + "---|" * (HEADER.count("|") - 1)]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['replicas']} | {r['error']} |")
            continue
        http, e2e = r["http"], r["end_to_end"]
        load = f"{r['load_average_before'][0]:.2f} / {r['load_average'][0]:.2f}"
        lines.append(
            f"| {r['replicas']} | {http['per_s']:,.0f} "
            f"| {http['p50_ms']:.0f} / {http['p90_ms']:.0f} / {http['p99_ms']:.0f} "
            f"| {http['errors']} | {e2e['orders']:,} | {e2e['e2e_per_s']:,.0f} "
            f"| {e2e['e2e_p50_ms']:,.0f} / {e2e['e2e_p99_ms']:,.0f} | {e2e['not_ended']} "
            f"| {'holds' if r['verify'].get('holds') else 'FAILS'} | {load} |"
        )
    return "\n".join(lines)


def write(cfg: ShopHttpConfig, results: Sequence[dict[str, Any]]) -> Path:
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "shop_http.json").write_text(json.dumps(list(results), indent=1))
    markdown = cfg.out / "shop_http.md"
    what = (
        f"The shop under `sagakit up`: {cfg.generator}, {cfg.connections} clients posting "
        f"orders for {cfg.duration:.0f} s, per replica count."
    )
    markdown.write_text(f"{what}\n\n{table(results)}\n\n{cpu_table(results)}\n")
    return markdown


def cpu_table(results: Sequence[dict[str, Any]]) -> str:
    """CPU milliseconds per order of each process, a row per replica count (replicas of
    a kind summed)."""
    kinds: dict[int, Counter[str]] = {}
    for r in results:
        if "error" in r:
            continue
        summed: Counter[str] = Counter()
        for name, ms in r.get("cpu_ms_per_order", {}).items():
            summed[name.split("-")[0]] += ms
        kinds[r["replicas"]] = summed
    names = sorted({n for summed in kinds.values() for n in summed})
    if not names:
        return ""
    header = "| CPU ms per order | " + " | ".join(names) + " | all |"
    lines = [header, "|" + "---|" * (len(names) + 2)]
    for replicas, summed in kinds.items():
        cells = " | ".join(f"{summed[n]:.1f}" for n in names)
        lines.append(f"| {replicas} replica(s) | {cells} | {sum(summed.values()):.1f} |")
    return "\n".join(lines)


def holds(results: Sequence[dict[str, Any]]) -> bool:
    """Every run's books balance and every saga ended."""
    return all(
        "error" not in r and r["verify"].get("holds") and not r["end_to_end"]["not_ended"]
        for r in results
    )


def main() -> None:
    """``python -m bench.shop_http``: ``sagakit bench --shop-http`` with its options."""
    import typer

    from bench.cli import bench

    sys.argv.insert(1, "--shop-http")
    typer.run(bench)


if __name__ == "__main__":
    main()
