"""The bench's settings: the systems it knows, in their order, and BenchConfig."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]

#: Systems in the order they run (and appear in the tables).
ALL_SYSTEMS = (
    "raw-asyncpg",
    "sagakit-fastpath",
    "sagakit-fastpath-statements",
    "sagakit-inprocess",
    "sagakit-embedded",
    "sagakit-distributed",
    "dbos",
    "temporal",
    "sagaz",
)
#: Systems that are sagakit (the rest are peers, never needed by the tests).
SAGAKIT = tuple(s for s in ALL_SYSTEMS if s.startswith("sagakit"))


@dataclass(slots=True)
class BenchConfig:
    systems: list[str] = field(default_factory=lambda: list(ALL_SYSTEMS))
    concurrencies: list[int] = field(default_factory=lambda: [1, 16, 64, 256])
    duration: float = 8.0
    warmup: int = 50
    rate: float = 50.0
    #: A second open loop for sagakit's systems, at the rate the distributed mode's
    #: latency target names (0: none).
    fast_rate: float = 100.0
    open_duration: float = 10.0
    crash: bool = True
    crash_after: float = 3.0
    crash_concurrency: int = 32
    recover_timeout: float = 120.0
    out: Path = ROOT / "bench" / "results"
    pg: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    amqp: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    seed: int = 7
    #: Orders seeded per second of a run (an upper bound on any system's throughput).
    orders_per_second: int = 2500
    #: Seconds to let PostgreSQL's statistics catch up before and after a window.
    settle: float = 1.2
    #: Rounds of each head-to-head (bench/head_to_head.py); 0: none. Five, not three:
    #: one run's rounds spread from 1.38 to 2.48, and a median of three is one
    #: unlucky stretch away from either end.
    rounds: int = 5
    quick: bool = False

    @classmethod
    def quick_config(cls, **overrides: Any) -> BenchConfig:
        """The small version: one concurrency (16), runs of 1.5 s, no warm-up, a short
        open loop, and the crash column for the fused fast path only (bench/README.md)."""
        settings: dict[str, Any] = {
            "concurrencies": [16],
            "duration": 1.5,
            "warmup": 0,
            "rate": 20.0,
            "fast_rate": 0.0,
            "open_duration": 1.5,
            "crash_after": 1.5,
            "crash_concurrency": 16,
            "recover_timeout": 30.0,
            "settle": 0.3,
            "rounds": 0,
            "quick": True,
        }
        settings.update(overrides)
        return cls(**settings)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["out"] = str(self.out)
        return data
