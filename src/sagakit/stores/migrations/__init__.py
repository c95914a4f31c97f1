"""Alembic migrations for sagakit's own tables; applied by ``sagakit migrate``."""

#: The newest revision; a test checks it against the scripts so the two never drift.
HEAD = "0007"
