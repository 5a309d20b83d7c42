"""wallet top-ups collected through a provider, and finance's goodwill credits

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 06:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "wallet_top_ups",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("rider_id", sa.String(40), sa.ForeignKey("riders.id"), nullable=False, index=True),
        sa.Column("idempotency_key", sa.String(60), nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("payment_key", sa.String(120), nullable=False, unique=True),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("rider_id", "idempotency_key"),
    )
    op.create_table(
        "goodwill_credits",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("rider_id", sa.String(40), sa.ForeignKey("riders.id"), nullable=False, index=True),
        sa.Column("idempotency_key", sa.String(60), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("approved_by", sa.String(40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("rider_id", "idempotency_key"),
    )


def downgrade() -> None:
    op.drop_table("goodwill_credits")
    op.drop_table("wallet_top_ups")
