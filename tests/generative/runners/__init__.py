"""One runner per runtime family, and the runtimes a generated run can use, by name."""

from __future__ import annotations

from tests.generative.runners.base import Observation, Plant, Runner
from tests.generative.runners.choreographed import ChoreographyRunner
from tests.generative.runners.fused import FusedRunner
from tests.generative.runners.orchestrated import RuntimeRunner

RUNNERS: dict[str, Runner] = {
    runner.name: runner
    for runner in (
        RuntimeRunner("memory-sqlite", "memory", "sqlite"),
        RuntimeRunner("memory-postgres", "memory", "postgres"),
        RuntimeRunner("rabbitmq-postgres", "rabbitmq", "postgres", layout="apart"),
        FusedRunner("fused-sqlite", "sqlite"),
        FusedRunner("fused-postgres", "postgres"),
        ChoreographyRunner("choreography-sqlite", "sqlite"),
        ChoreographyRunner("choreography-postgres", "postgres"),
    )
}

__all__ = ["RUNNERS", "Observation", "Plant", "Runner"]
