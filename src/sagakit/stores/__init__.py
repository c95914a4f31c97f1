"""Saga stores, chosen by URL: ``sqlite:///path/file.db`` or ``postgresql://...``."""

from __future__ import annotations

from sagakit.ports import Clock
from sagakit.stores.sql import SqlSagaStore


def open_store(url: str, *, clock: Clock | None = None, snapshot_every: int = 50) -> SqlSagaStore:
    """The store for ``url``. Drivers are imported only for the adapter chosen."""
    scheme = url.split(":", 1)[0].lower()
    if scheme in {"sqlite", "sqlite+aiosqlite"}:
        from sagakit.stores.sqlite import SqliteSagaStore

        path = url.split(":///", 1)[1] if ":///" in url else ""
        if not path or path == ":memory:":
            raise ValueError(
                f"sqlite store URL {url!r} needs a file path, e.g. sqlite:///.sagakit/saga.db"
            )
        return SqliteSagaStore(path, clock=clock, snapshot_every=snapshot_every)
    if scheme in {"postgresql", "postgres", "postgresql+asyncpg"}:
        from sagakit.stores.postgres import PostgresSagaStore

        normalized = "postgresql" + url[len(scheme) :]
        return PostgresSagaStore(normalized, clock=clock, snapshot_every=snapshot_every)
    raise ValueError(
        f"unsupported store URL {url!r}: use sqlite:///path/to/file.db or postgresql://..."
    )


__all__ = ["SqlSagaStore", "open_store"]
