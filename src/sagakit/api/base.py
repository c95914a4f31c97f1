"""What every route of the admin API shares: its configuration and who is calling."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Literal

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from sagakit.api.auth import SESSION_COOKIE, Authenticator, Token
from sagakit.api.guard import MAX_BODY
from sagakit.model.definition import SagaDefinition, StepKind
from sagakit.observe.metrics import Metrics
from sagakit.observe.redaction import Redaction, current
from sagakit.ports import DeadLetterQueue, SagaRow
from sagakit.stores.sql import SqlSagaStore

#: The furthest page a listing may start at (an offset past what a database's integers
#: hold was a 500).
MAX_OFFSET = 10_000_000


@dataclass
class AdminConfig:
    """What the admin API reads and acts on."""

    saga_store: SqlSagaStore
    definitions: Sequence[SagaDefinition]
    tokens: Sequence[Token]
    #: Participants' stores: their breakers and outbox lag.
    stores: Sequence[SqlSagaStore] = ()
    dead_letters: DeadLetterQueue | None = None
    group: str = "orchestrator"
    metrics: Metrics = field(default_factory=Metrics)
    #: How often the live stream looks for changes, in seconds.
    poll: float = 0.5
    #: Request bodies above this many bytes are refused (413) before they are read.
    max_body: int = MAX_BODY
    #: Fields hidden from viewers of sagas and dead letters (default: SAGAKIT_REDACT).
    redaction: Redaction = field(default_factory=current)
    #: How long a dashboard's session lasts, in seconds.
    session_ttl: float = 8 * 3600
    #: A trace viewer's address for one trace, e.g. ``http://jaeger:16686/trace/{trace_id}``:
    #: the dashboard links each saga's trace id to it.
    trace_url: str | None = None
    #: How often dead-letter depth and outbox lag are sampled for their charts, in seconds.
    sample_every: float = 5.0
    authenticator: Authenticator = field(init=False)
    approval_steps: list[str] = field(init=False)
    _owners: dict[tuple[str, str], str] = field(init=False)

    def __post_init__(self) -> None:
        self.authenticator = Authenticator(self.tokens, session_ttl=self.session_ttl)
        self.approval_steps = sorted(
            {s.name for d in self.definitions for s in d.steps if s.kind is StepKind.APPROVAL}
        )
        self._owners = {(d.name, s.name): s.participant for d in self.definitions for s in d.steps}
        if self.trace_url is not None:
            if "{trace_id}" not in self.trace_url:
                raise ValueError("trace_url needs {trace_id} where the trace's id goes")
            if not self.trace_url.startswith(("http://", "https://")):
                raise ValueError("trace_url must be an http:// or https:// address")

    def participant_of(self, definition: str, step: str) -> str | None:
        return self._owners.get((definition, step))


Status = Literal[
    "running", "compensating", "completed", "compensated", "needs_attention", "resolved"
]


def saga_json(row: SagaRow) -> dict[str, Any]:
    """A saga's row as the API answers it."""
    return asdict(row)


def config_of(request: Request) -> AdminConfig:
    config: AdminConfig = request.app.state.admin
    return config


# Declared so the OpenAPI document says how to authenticate; the check itself reads
# the header and the cookie once, in caller().
_bearer = HTTPBearer(auto_error=False, description="A token: role:name:secret's secret.")
_session = APIKeyCookie(
    name=SESSION_COOKIE, auto_error=False, description="A session from POST /api/session."
)


def caller(
    request: Request,
    _bearer_given: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    _session_given: Annotated[str | None, Depends(_session)],
) -> Token:
    """Whoever the request's token or session says it is; 401 without a valid one."""
    token = config_of(request).authenticator.identify_request(request.headers, request.cookies)
    if token is None:
        raise HTTPException(
            status_code=401,
            detail="a valid token is required (Authorization: Bearer <token>, or a session)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return token


def operator(token: Annotated[Token, Depends(caller)]) -> Token:
    """An operator; 403 for a viewer."""
    if not token.may_act:
        raise HTTPException(status_code=403, detail=f"{token.name} may read but not act")
    return token


Caller = Annotated[Token, Depends(caller)]
Operator = Annotated[Token, Depends(operator)]


def _problem(what: str) -> dict[str, Any]:
    return {
        "description": what,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"detail": {}},
                    "required": ["detail"],
                }
            }
        },
    }


#: The answers any route may give besides its own, for the OpenAPI document.
READ_ERRORS: dict[int | str, dict[str, Any]] = {
    401: _problem("no valid token or session"),
    413: _problem("the body is over the limit"),
    422: _problem("the request is malformed"),
}
ACTION_ERRORS: dict[int | str, dict[str, Any]] = {
    **READ_ERRORS,
    403: _problem("a viewer may read but not act"),
    404: _problem("no such saga or dead letter"),
}
