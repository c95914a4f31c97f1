"""Dead letters kept in the database, for transports without a broker.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "saga_dead_letters",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("queue", sa.String(300), nullable=False),
        sa.Column("message_id", sa.String(128), nullable=False),
        sa.Column("headers", sa.Text, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("dead_at", sa.Float, nullable=False),
    )
    op.create_index("ix_saga_dead_letters_dead_at", "saga_dead_letters", ["dead_at"])


def downgrade() -> None:
    op.drop_table("saga_dead_letters")
