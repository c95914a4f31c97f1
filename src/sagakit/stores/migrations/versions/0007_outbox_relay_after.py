"""Outbox rows a publisher publishes on commit: the relay leaves them until relay_after.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("saga_outbox", sa.Column("relay_after", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("saga_outbox") as batch:
        batch.drop_column("relay_after")
