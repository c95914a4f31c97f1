"""``GET /api/audit``: every operator action across sagas and dead letters, newest
first, with who asked and why (see :mod:`sagakit.audit`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from sagakit import audit
from sagakit.api.auth import Token
from sagakit.api.base import MAX_OFFSET, Caller, config_of
from sagakit.ports import UnitOfWork

router = APIRouter(tags=["audit"])


async def record_for(
    unit: UnitOfWork, *, token: Token, action: str, target: str, note: str
) -> None:
    """Record an action asked through the API, in ``unit``'s transaction."""
    await audit.record(
        unit,
        who=token.name,
        action=action,
        target=target,
        note=note,
        via="api",
        at=await unit.now(),
    )


@router.get("/api/audit")
async def actions(
    request: Request,
    token: Caller,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    target: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    """Who did what to which saga or dead letter, and why, newest first."""
    async with config_of(request).saga_store.unit() as unit:
        found = await audit.recent(unit, limit=limit, offset=offset, target=target)
    return {"items": [action.as_dict() for action in found]}
