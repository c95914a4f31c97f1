"""A token exchanged once for a session, so it lives in no address bar and no log.

The dashboard takes the token from its address once, sends it here as a bearer token,
and from then on is known by an HttpOnly, SameSite=Strict cookie that scripts cannot
read and other sites cannot send; the live stream authenticates with it too.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from sagakit.api.auth import SESSION_COOKIE
from sagakit.api.base import Caller, config_of

router = APIRouter(tags=["session"])


@router.post("/api/session")
async def open_session(request: Request, response: Response, token: Caller) -> dict[str, Any]:
    """Exchange the bearer token for a session cookie; answers who it is."""
    authenticator = config_of(request).authenticator
    session = authenticator.open_session(token)
    response.set_cookie(
        SESSION_COOKIE,
        session,
        max_age=int(authenticator.session_ttl),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return {"name": token.name, "role": token.role}


@router.delete("/api/session", status_code=204)
async def close_session(request: Request, token: Caller) -> Response:
    """Sign out: the session ends here and its cookie is cleared."""
    config_of(request).authenticator.close_session(request.cookies.get(SESSION_COOKIE))
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
