"""The admin API and the dashboard it serves (see docs/api.md)."""

from sagakit.api.app import AdminConfig, create_admin_app
from sagakit.api.auth import Token, parse_tokens

__all__ = ["AdminConfig", "Token", "create_admin_app", "parse_tokens"]
