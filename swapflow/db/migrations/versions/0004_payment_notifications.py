"""payment provider notifications (issue 4, providers)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 05:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "payment_notifications",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("notification_id", sa.String(80), nullable=False),
        sa.Column("event_type", sa.String(60), nullable=False),
        sa.Column("key", sa.String(120), nullable=True),
        sa.Column("status", sa.String(16), nullable=True),
        sa.Column("workflow_id", sa.String(80), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("provider", "notification_id"),
    )
    op.create_index("ix_payment_notifications_key", "payment_notifications", ["key"])


def downgrade() -> None:
    op.drop_index("ix_payment_notifications_key", table_name="payment_notifications")
    op.drop_table("payment_notifications")
