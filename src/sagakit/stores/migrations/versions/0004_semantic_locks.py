"""Semantic locks held by sagas on participants' records, and the queue waiting for them.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "saga_locks",
        sa.Column("resource", sa.String(300), primary_key=True),
        sa.Column("saga_id", sa.String(128), nullable=False),
        sa.Column("participant", sa.String(200), nullable=False),
        sa.Column("step", sa.String(200), nullable=False),
        sa.Column("acquired_at", sa.Float, nullable=False),
    )
    op.create_index("ix_saga_locks_saga", "saga_locks", ["saga_id"])
    op.create_table(
        "saga_lock_waiters",
        sa.Column("resource", sa.String(300), primary_key=True),
        sa.Column("saga_id", sa.String(128), primary_key=True),
        sa.Column("since", sa.Float, nullable=False),
    )
    op.create_index("ix_saga_lock_waiters_saga", "saga_lock_waiters", ["saga_id"])


def downgrade() -> None:
    op.drop_table("saga_lock_waiters")
    op.drop_table("saga_locks")
