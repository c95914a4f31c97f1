"""Tokens and roles: who may read, who may act.

Tokens come from configuration (``SAGAKIT_TOKENS`` or a file), never from code, in
lines or comma-separated items of ``role:name:secret``. A presented secret is compared
with every known one in constant time, so timing tells nothing about which is close.
"""

from __future__ import annotations

import hmac
import os
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Role = Literal["viewer", "operator"]
ROLES: tuple[Role, ...] = ("viewer", "operator")


@dataclass(frozen=True, slots=True)
class Token:
    role: Role
    name: str
    secret: str = ""

    def __repr__(self) -> str:  # never print a secret
        return f"Token(role={self.role!r}, name={self.name!r})"

    @property
    def may_act(self) -> bool:
        return self.role == "operator"

    @property
    def hint(self) -> str:
        """Enough of the secret to tell tokens apart, too little to use: its first four
        characters."""
        return f"{self.secret[:4]}…" if self.secret else ""


def parse_tokens(text: str) -> list[Token]:
    """``role:name:secret`` items, one per line or separated by commas.

    An error names the item by its position (``item 2``), never by what it holds: a
    malformed item may be a secret with its separators lost."""
    tokens = []
    items = (raw.strip() for raw in text.replace(",", "\n").splitlines())
    for position, item in enumerate((i for i in items if i and not i.startswith("#")), 1):
        parts = item.split(":", 2)
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"item {position} is not role:name:secret")
        role, name, secret = parts
        if role not in ROLES:
            raise ValueError(f"item {position}: the role is not one of {', '.join(ROLES)}")
        if len(secret) < 16:
            raise ValueError(f"item {position}: the secret is too short (at least 16 characters)")
        tokens.append(Token(role, name, secret))
    return tokens


def write_tokens(tokens: Iterable[Token], path: Path) -> Path:
    """Write ``tokens`` to ``path`` (created with mode 0600: only its owner reads it),
    in the form :func:`parse_tokens` reads; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(f"{t.role}:{t.name}:{t.secret}\n" for t in tokens)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), 0o600)  # an older file keeps its mode through O_TRUNC
        out.write(text)
    return path


def tokens_from(env: Mapping[str, str] = os.environ, file: Path | None = None) -> list[Token]:
    """The configured tokens: a file if given, else ``SAGAKIT_TOKENS``."""
    if file is not None:
        return parse_tokens(file.read_text())
    return parse_tokens(env.get("SAGAKIT_TOKENS", ""))


def configured_or_fresh(
    fresh_file: Path, env: Mapping[str, str] = os.environ
) -> tuple[list[Token], str]:
    """The tokens in ``SAGAKIT_TOKENS``, or fresh ones written to ``fresh_file`` (mode
    0600); with where they are, to tell a person without showing them."""
    configured = tokens_from(env)
    if configured:
        return configured, "SAGAKIT_TOKENS"
    made = fresh_tokens()
    return made, f"{write_tokens(made, fresh_file)} (mode 0600)"


def fresh_tokens() -> list[Token]:
    """An operator and a viewer token for a demo, made up on the spot."""
    return [
        Token("operator", "demo-operator", secrets.token_urlsafe(24)),
        Token("viewer", "demo-viewer", secrets.token_urlsafe(24)),
    ]


#: The cookie that carries a dashboard's session (HttpOnly, SameSite=Strict).
SESSION_COOKIE = "sagakit_session"


class Authenticator:
    """Who a request is: a bearer token, or a session a token was exchanged for.

    Sessions live in this process's memory for ``session_ttl`` seconds (at most
    ``max_sessions`` at once, the oldest dropped first); a restart signs everyone out."""

    def __init__(
        self, tokens: Iterable[Token], *, session_ttl: float = 8 * 3600, max_sessions: int = 10_000
    ) -> None:
        self._tokens = list(tokens)
        self.session_ttl = session_ttl
        self.max_sessions = max_sessions
        self._sessions: dict[str, tuple[Token, float]] = {}

    def open_session(self, token: Token) -> str:
        """A new session for ``token``; returns its id (the cookie's value)."""
        now = time.monotonic()
        self._sessions = {k: v for k, v in self._sessions.items() if v[1] > now}
        while len(self._sessions) >= self.max_sessions:
            del self._sessions[next(iter(self._sessions))]
        session = secrets.token_urlsafe(32)
        self._sessions[session] = (token, now + self.session_ttl)
        return session

    def close_session(self, session: str | None) -> None:
        self._sessions.pop(session or "", None)

    def session(self, session: str | None) -> Token | None:
        found = self._sessions.get(session or "")
        if found is None or found[1] <= time.monotonic():
            return None
        return found[0]

    def identify_request(
        self, headers: Mapping[str, str], cookies: Mapping[str, str]
    ) -> Token | None:
        """The bearer token in ``Authorization``, else the session cookie's, else None."""
        header = headers.get("authorization", "")
        if header[:7].lower() == "bearer ":
            return self.identify(header[7:].strip())
        return self.session(cookies.get(SESSION_COOKIE))

    def identify(self, presented: str | None) -> Token | None:
        if not presented:
            return None
        found: Token | None = None
        given = presented.encode()
        for token in self._tokens:  # every comparison runs: no early exit
            if hmac.compare_digest(given, token.secret.encode()):
                found = token
        return found
