"""A system as the runner holds it: set up for its runs, with the long-lived services
it needs, or unavailable here."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bench import workload


class Unavailable(Exception):
    """A system that cannot run here; the reason goes into the results."""


@dataclass(slots=True)
class Service:
    """A long-lived process of a system (a RabbitMQ service, the Temporal server)."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    ready: Callable[[], Awaitable[None]] | None = None
    process: asyncio.subprocess.Process | None = None


@dataclass(slots=True)
class Prepared:
    """A system set up for its runs."""

    system: str
    worker_db: str
    databases: list[str]
    seed_orders: Callable[[int, int], Awaitable[None]]
    check: Callable[[], Awaitable[workload.Verdict]]
    cleanup: Callable[[], Awaitable[None]]
    options: dict[str, Any] = field(default_factory=dict)
    services: list[Service] = field(default_factory=list)
    next_order: int = 1
