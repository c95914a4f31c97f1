"""The HTTP load generators (wrk, hey): whether one is installed, the command line that
posts the shop's orders, and the figures read from its report."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.shop_http_config import ShopHttpConfig

#: The load generators the mode knows, and how to install each (Debian).
GENERATORS = {"wrk": "apt-get install -y wrk", "hey": "apt-get install -y hey"}

#: Customers who can pay for many cheap orders in the shop's default world, and the item
#: with the deepest stock: the load is orders that should complete, as on a good day.
CUSTOMERS = ("c-ada", "c-grace", "c-edsger", "c-barbara")
SKU = "mug"

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
