"""Tokens and roles: who may read, who may act.

Tokens come from configuration (``SAGAKIT_TOKENS`` or a file), never from code, in
lines or comma-separated items of ``role:name:secret``. A presented secret is compared
with every known one in constant time, so timing tells nothing about which is close.
"""

from __future__ import annotations

import hmac
import os
import secrets
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


def parse_tokens(text: str) -> list[Token]:
    """``role:name:secret`` items, one per line or separated by commas."""
    tokens = []
    for raw in text.replace(",", "\n").splitlines():
        item = raw.strip()
        if not item or item.startswith("#"):
            continue
        parts = item.split(":", 2)
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"a token is role:name:secret, got {parts[0]!r}:…")
        role, name, secret = parts
        if role not in ROLES:
            raise ValueError(f"token role {role!r} is not one of {', '.join(ROLES)}")
        if len(secret) < 16:
            raise ValueError(f"the secret of token {name!r} is too short (at least 16 characters)")
        tokens.append(Token(role, name, secret))
    return tokens


def tokens_from(env: Mapping[str, str] = os.environ, file: Path | None = None) -> list[Token]:
    """The configured tokens: a file if given, else ``SAGAKIT_TOKENS``."""
    if file is not None:
        return parse_tokens(file.read_text())
    return parse_tokens(env.get("SAGAKIT_TOKENS", ""))


def fresh_tokens() -> list[Token]:
    """An operator and a viewer token for a demo, made up on the spot."""
    return [
        Token("operator", "demo-operator", secrets.token_urlsafe(24)),
        Token("viewer", "demo-viewer", secrets.token_urlsafe(24)),
    ]


class Authenticator:
    def __init__(self, tokens: Iterable[Token]) -> None:
        self._tokens = list(tokens)

    def identify(self, presented: str | None) -> Token | None:
        if not presented:
            return None
        found: Token | None = None
        given = presented.encode()
        for token in self._tokens:  # every comparison runs: no early exit
            if hmac.compare_digest(given, token.secret.encode()):
                found = token
        return found
