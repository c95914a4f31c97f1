"""The tables sagakit keeps in every database it uses (the migrations create them)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

#: Alembic's version table, named so it never collides with an application's own.
VERSION_TABLE = "sagakit_alembic_version"

_ID = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER keys only

sagas = Table(
    "sagas",
    metadata,
    Column("saga_id", String(128), primary_key=True),
    Column("definition", String(200), nullable=False),
    Column("definition_version", Integer, nullable=False),
    Column("key", String(200)),
    Column("status", String(32), nullable=False),
    Column("current_step", String(400)),
    Column("deadline", Float),
    Column("wake_at", Float),
    Column("version", Integer, nullable=False),
    Column("snapshot_version", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("reason", Text),
    Index("ix_sagas_status_updated", "status", "updated_at"),
    Index("ix_sagas_definition", "definition", "updated_at"),
    Index("ix_sagas_key", "key"),
    Index(
        "ix_sagas_wake_at",
        "wake_at",
        postgresql_where=Column("wake_at").isnot(None),
        sqlite_where=Column("wake_at").isnot(None),
    ),
)

saga_events = Table(
    "saga_events",
    metadata,
    Column("saga_id", String(128), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("type", String(64), nullable=False),
    Column("schema_version", Integer, nullable=False),
    Column("data", Text, nullable=False),
    Column("recorded_at", Float, nullable=False),
)

saga_snapshots = Table(
    "saga_snapshots",
    metadata,
    Column("saga_id", String(128), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("schema", Integer, nullable=False),
    Column("state", Text, nullable=False),
    Column("taken_at", Float, nullable=False),
)

saga_outbox = Table(
    "saga_outbox",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("message_id", String(128), nullable=False, unique=True),
    Column("destination", String(300), nullable=False),
    Column("saga_id", String(128), nullable=False),
    Column("type", String(200), nullable=False),
    Column("headers", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("sent_at", Float),
    # Set when a publisher publishes the row on commit (sagakit.engine.publisher): the relay
    # leaves it until then. NULL: the relay takes it at once.
    Column("relay_after", Float),
    Index(
        "ix_saga_outbox_unsent",
        "id",
        postgresql_where=Column("sent_at").is_(None),
        sqlite_where=Column("sent_at").is_(None),
    ),
    Index("ix_saga_outbox_sent_at", "sent_at"),
)

saga_inbox = Table(
    "saga_inbox",
    metadata,
    Column("consumer", String(200), primary_key=True),
    Column("key", String(400), primary_key=True),
    Column("reply", Text),
    Column("received_at", Float, nullable=False),
)

saga_dead_letters = Table(
    "saga_dead_letters",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("queue", String(300), nullable=False),
    Column("message_id", String(128), nullable=False),
    Column("headers", Text, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("reason", String(64), nullable=False),
    Column("detail", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("dead_at", Float, nullable=False),
    Index("ix_saga_dead_letters_dead_at", "dead_at"),
)

saga_rules = Table(
    "saga_rules",
    metadata,
    Column("saga", String(200), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("source", Text, nullable=False),
    Column("published_at", Float, nullable=False),
)

saga_locks = Table(
    "saga_locks",
    metadata,
    Column("resource", String(300), primary_key=True),
    Column("saga_id", String(128), nullable=False),
    Column("participant", String(200), nullable=False),
    Column("step", String(200), nullable=False),
    Column("acquired_at", Float, nullable=False),
    Index("ix_saga_locks_saga", "saga_id"),
)

saga_lock_waiters = Table(
    "saga_lock_waiters",
    metadata,
    Column("resource", String(300), primary_key=True),
    Column("saga_id", String(128), primary_key=True),
    Column("since", Float, nullable=False),
    Index("ix_saga_lock_waiters_saga", "saga_id"),
)

saga_breakers = Table(
    "saga_breakers",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("failures", Integer, nullable=False),
    Column("opened_at", Float),
    Column("updated_at", Float, nullable=False),
)

#: Every operator action (retry, compensate, resolve, approve, reject, a dead letter's
#: replay): who asked, what, on which saga or letter, and why.
saga_audit = Table(
    "saga_audit",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("who", String(200), nullable=False),
    Column("action", String(32), nullable=False),
    Column("target", String(200), nullable=False),
    Column("note", Text, nullable=False),
    Column("via", String(16), nullable=False),
    Index("ix_saga_audit_at", "at"),
)

#: Running orchestrators' heartbeats (sagakit.engine.liveness).
saga_heartbeats = Table(
    "saga_heartbeats",
    metadata,
    Column("group", String(200), primary_key=True),
    Column("member", String(300), primary_key=True),
    Column("beat_at", Float, nullable=False),
)
