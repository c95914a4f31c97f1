"""Operator actions on the record, and running orchestrators' heartbeats.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "saga_audit",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("who", sa.String(200), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("via", sa.String(16), nullable=False),
    )
    op.create_index("ix_saga_audit_at", "saga_audit", ["at"])
    op.create_table(
        "saga_heartbeats",
        sa.Column("group", sa.String(200), primary_key=True),
        sa.Column("member", sa.String(300), primary_key=True),
        sa.Column("beat_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("saga_heartbeats")
    op.drop_index("ix_saga_audit_at", "saga_audit")
    op.drop_table("saga_audit")
