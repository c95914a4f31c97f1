"""The payment gateway: an outside system that authorizes and voids card charges.

It honours an ``Idempotency-Key`` header, as real gateways do: the payment service
authorizes with a key per order, so a call repeated after its local transaction rolled
back (a timeout that hid a success, a crash before the commit) gets the first
authorization back instead of a second one.
"""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sagakit_shop.trouble import Knobs, trouble_routes

if TYPE_CHECKING:
    from fastapi import FastAPI


class AuthorizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    order_id: str = Field(min_length=1, max_length=64)
    customer_id: str = Field(min_length=1, max_length=64)
    amount_cents: int = Field(gt=0)


class Authorization(BaseModel):
    id: str
    order_id: str
    customer_id: str
    amount_cents: int
    status: Literal["authorized", "voided"]
    idempotency_key: str


@dataclass
class Gateway:
    """The payment gateway's own books: authorizations by id and by idempotency key.

    With ``books`` (a SQLite file) they outlive the process, as a real gateway's do: a
    gateway restarted between a charge and its retry still answers the retry with the
    first authorization instead of making a second. Without, they live in memory (the
    embedded demo, where the gateway lives and dies with the shop).
    """

    knobs: Knobs = field(default_factory=Knobs)
    by_id: dict[str, Authorization] = field(default_factory=dict)
    by_key: dict[str, str] = field(default_factory=dict)
    replays: int = 0
    books: Path | None = None
    _db: sqlite3.Connection | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.books is None:
            return
        self.books.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.books, isolation_level=None)  # each write commits
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS authorizations (id TEXT PRIMARY KEY, body TEXT NOT NULL)"
        )
        for (body,) in self._db.execute("SELECT body FROM authorizations"):
            found = Authorization.model_validate_json(body)
            self.by_id[found.id] = found
            self.by_key[found.idempotency_key] = found.id

    def _keep(self, authorization: Authorization) -> None:
        """Write ``authorization`` to the books (before it is answered), then remember it."""
        if self._db is not None:
            self._db.execute(
                "INSERT INTO authorizations (id, body) VALUES (?, ?) "
                "ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                (authorization.id, authorization.model_dump_json()),
            )
        self.by_id[authorization.id] = authorization
        self.by_key[authorization.idempotency_key] = authorization.id

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def void(self, authorization_id: str) -> Authorization | None:
        """Void an authorization (voiding twice is voiding); None if there is none."""
        found = self.by_id.get(authorization_id)
        if found is None:
            return None
        if found.status != "voided":
            found = found.model_copy(update={"status": "voided"})
            self._keep(found)
        return found

    def authorize(self, key: str, request: AuthorizeRequest) -> tuple[Authorization, bool]:
        """The authorization for ``key``: the one made before (True), or a new one."""
        known = self.by_key.get(key)
        if known is not None:
            found = self.by_id[known]
            if (found.order_id, found.customer_id, found.amount_cents) != (
                request.order_id,
                request.customer_id,
                request.amount_cents,
            ):
                raise ValueError(f"idempotency key {key!r} was used for another request")
            self.replays += 1
            return found, True
        made = Authorization(
            id=f"auth_{uuid.uuid4().hex[:16]}",
            status="authorized",
            idempotency_key=key,
            **request.model_dump(),
        )
        self._keep(made)
        return made, False


def gateway_app(gateway: Gateway) -> FastAPI:
    """The payment gateway's HTTP API."""
    from fastapi import FastAPI, Header, HTTPException
    from fastapi.responses import JSONResponse

    from sagakit.api.guard import harden

    app = FastAPI(title="payment gateway", description="Authorizes and voids card charges.")
    trouble_routes(app, gateway.knobs, "payment gateway")

    @app.post("/authorizations", status_code=201, response_model=Authorization)
    async def authorize(
        request: AuthorizeRequest,
        idempotency_key: str = Header(min_length=1, max_length=200),
    ) -> Any:
        try:
            made, replayed = gateway.authorize(idempotency_key, request)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        await gateway.knobs.answer_late()
        if replayed:  # the first answer again, marked the way real gateways mark it
            headers = {"Idempotent-Replayed": "true"}
            return JSONResponse(made.model_dump(), status_code=200, headers=headers)
        return made

    @app.post("/authorizations/{authorization_id}/void")
    async def void(authorization_id: str) -> Authorization:
        voided = gateway.void(authorization_id)
        if voided is None:
            raise HTTPException(404, f"no authorization {authorization_id}")
        await gateway.knobs.answer_late()
        return voided

    @app.get("/authorizations")
    async def authorizations() -> list[Authorization]:
        return list(gateway.by_id.values())

    return harden(app)  # bodies bounded before they are read, as on every server
