"""The trouble an outside system can be put in, and the routes every one of them serves.

An outside system (the payment gateway, the carrier) answers a share of its calls 503,
answers late, or is down, as its :class:`Knobs` say; ``PUT /trouble`` turns them at run
time, ``GET /health`` says it is up. A 5xx or a timeout is the dependency failing; the
business answers (a 4xx) are each system's own.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from fastapi import FastAPI


class Trouble(BaseModel):
    """How badly an outside system behaves: a share of calls answered 503, a delay before
    every answer (after the work is done, so a caller's timeout can hide a success), or
    down altogether (for ``down_for_s`` seconds from now, when given)."""

    model_config = ConfigDict(extra="forbid")

    fail_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    delay_s: float = Field(default=0.0, ge=0.0, le=60.0)
    down: bool = False
    down_for_s: float | None = Field(default=None, ge=0.0, le=3600.0)


@dataclass
class Knobs:
    """The trouble an outside system is in right now."""

    trouble: Trouble = field(default_factory=Trouble)
    seed: int = 0
    down_until: float | None = None
    rng: random.Random = field(init=False)
    served: int = 0
    failed: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)  # noqa: S311 - seeded trouble, not security
        self.set(self.trouble)

    def set(self, trouble: Trouble) -> None:
        self.trouble = trouble
        self.down_until = None if trouble.down_for_s is None else time.time() + trouble.down_for_s

    def now(self) -> Trouble:
        """The trouble as it stands (a timed outage that has passed is over)."""
        if self.down_until is not None and time.time() >= self.down_until:
            self.set(self.trouble.model_copy(update={"down_for_s": None}))
        if self.down_until is None:
            return self.trouble
        left = round(self.down_until - time.time(), 3)
        return self.trouble.model_copy(update={"down_for_s": left})

    def failing(self) -> bool:
        """Whether this call fails (down, or unlucky under ``fail_rate``)."""
        trouble = self.now()
        if trouble.down or trouble.down_for_s is not None:
            return True
        return trouble.fail_rate > 0 and self.rng.random() < trouble.fail_rate

    async def answer_late(self) -> None:
        if self.trouble.delay_s:
            await asyncio.sleep(self.trouble.delay_s)


def trouble_routes(app: FastAPI, knobs: Knobs, what: str) -> None:
    """Health, the trouble knobs, and the middleware that fails calls as they say."""
    from fastapi.responses import JSONResponse

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "service": what}

    @app.get("/trouble")
    async def get_trouble() -> Trouble:
        return knobs.now()

    @app.put("/trouble")
    async def put_trouble(trouble: Trouble) -> Trouble:
        knobs.set(trouble)
        return knobs.now()

    @app.middleware("http")
    async def trouble(request: Any, call_next: Any) -> Any:
        if request.url.path in ("/health", "/trouble", "/docs", "/openapi.json"):
            return await call_next(request)
        if knobs.failing():
            knobs.failed += 1
            return JSONResponse({"detail": f"{what} unavailable"}, status_code=503)
        knobs.served += 1
        return await call_next(request)
