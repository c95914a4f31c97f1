"""How the PostgreSQL store connects: its URLs for SQLAlchemy and for asyncpg itself, its
connection pool, and the planner settings of its sessions."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

#: Planner settings for the store's own connections (``settings=`` adds or overrides).
#: Its statements fetch and lock a few rows by key among many; two server defaults made
#: PostgreSQL scan whole tables for them instead. ``random_page_cost`` 4 prices every
#: index probe as a disk seek, while a saga store's hot rows are in memory. And a
#: prepared statement's generic plan, cached after five runs, is kept as long as the
#: connection lives: one cached while a new database's tables were nearly empty read
#: the inbox and the sagas table whole on every later call (3,000 rows per saga in the
#: benchmark). A plan made per execution costs a little planning and sees the tables as
#: they are.
SESSION_SETTINGS: Mapping[str, str] = {
    "random_page_cost": "1.1",
    "plan_cache_mode": "force_custom_plan",
}


#: The pool's settings a store URL may carry in its query (``?pool_size=5&max_overflow=0``),
#: so a deployment sizes each process's pool where it names the database. They are taken
#: out of the URL before it reaches the driver, which would send them to the server as
#: session settings.
POOL_PARAMETERS = ("pool_size", "max_overflow")


def pool_from_url(url: str) -> tuple[str, dict[str, int]]:
    """``url`` without its pool parameters, and their values; a value that is not a
    whole number (``pool_size`` at least 1, ``max_overflow`` at least 0) is refused by
    name."""
    parsed = make_url(url)
    found: dict[str, int] = {}
    for name in POOL_PARAMETERS:
        raw = parsed.query.get(name)
        if raw is None:
            continue
        text = raw[-1] if isinstance(raw, tuple) else raw
        least = 1 if name == "pool_size" else 0
        if not text.strip().isdigit() or int(text) < least:
            raise ValueError(
                f"{name}={text!r} in the store URL is not a whole number of connections "
                f"(at least {least})"
            )
        found[name] = int(text)
    if not found:
        return url, found
    clean = parsed.difference_update_query(POOL_PARAMETERS)
    return clean.render_as_string(hide_password=False), found


def asyncpg_url(url: str) -> str:
    """``postgresql://...`` as SQLAlchemy's asyncpg URL."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def driver_dsn(url: str) -> str:
    """``url`` as asyncpg's own ``connect`` takes it (for a connection outside the pool)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def pooled_engine(
    url: str, *, pool_size: int, max_overflow: int, settings: Mapping[str, str] | None
) -> AsyncEngine:
    """The store's engine: ``pool_size`` connections and ``max_overflow`` more at a peak,
    each session with :data:`SESSION_SETTINGS` and ``settings`` over them."""
    # No pre-ping: SQLAlchemy's costs three round trips (BEGIN, a ping, ROLLBACK) per
    # checkout, that is per transaction. A connection that died (a restarted server)
    # fails its first statement instead; SQLAlchemy then drops every connection made
    # before it, and the unit's StoreError is retryable, so the work runs again.
    return create_async_engine(
        asyncpg_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        connect_args={"server_settings": {**SESSION_SETTINGS, **(settings or {})}},
    )
