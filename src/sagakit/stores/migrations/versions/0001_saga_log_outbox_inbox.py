"""The saga log, its projection and snapshots, the outbox and the inbox.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "sagas",
        sa.Column("saga_id", sa.String(128), primary_key=True),
        sa.Column("definition", sa.String(200), nullable=False),
        sa.Column("definition_version", sa.Integer, nullable=False),
        sa.Column("key", sa.String(200)),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("current_step", sa.String(400)),
        sa.Column("deadline", sa.Float),
        sa.Column("wake_at", sa.Float),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("snapshot_version", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("reason", sa.Text),
    )
    op.create_index("ix_sagas_status_updated", "sagas", ["status", "updated_at"])
    op.create_index("ix_sagas_definition", "sagas", ["definition", "updated_at"])
    op.create_index("ix_sagas_key", "sagas", ["key"])
    op.create_index(
        "ix_sagas_wake_at",
        "sagas",
        ["wake_at"],
        postgresql_where=sa.text("wake_at IS NOT NULL"),
        sqlite_where=sa.text("wake_at IS NOT NULL"),
    )
    op.create_table(
        "saga_events",
        sa.Column("saga_id", sa.String(128), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("schema_version", sa.Integer, nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("recorded_at", sa.Float, nullable=False),
    )
    op.create_table(
        "saga_snapshots",
        sa.Column("saga_id", sa.String(128), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("schema", sa.Integer, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("taken_at", sa.Float, nullable=False),
    )
    op.create_table(
        "saga_outbox",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("message_id", sa.String(128), nullable=False, unique=True),
        sa.Column("destination", sa.String(300), nullable=False),
        sa.Column("saga_id", sa.String(128), nullable=False),
        sa.Column("type", sa.String(200), nullable=False),
        sa.Column("headers", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("sent_at", sa.Float),
    )
    op.create_index(
        "ix_saga_outbox_unsent",
        "saga_outbox",
        ["id"],
        postgresql_where=sa.text("sent_at IS NULL"),
        sqlite_where=sa.text("sent_at IS NULL"),
    )
    op.create_index("ix_saga_outbox_sent_at", "saga_outbox", ["sent_at"])
    op.create_table(
        "saga_inbox",
        sa.Column("consumer", sa.String(200), primary_key=True),
        sa.Column("key", sa.String(400), primary_key=True),
        sa.Column("reply", sa.Text),
        sa.Column("received_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    for table in ("saga_inbox", "saga_outbox", "saga_snapshots", "saga_events", "sagas"):
        op.drop_table(table)
