"""payments, refunds, wallets, subscriptions, pricing and reconciliation (issue 4)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 05:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "payments",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("key", sa.String(length=120), nullable=False),
        sa.Column("order_id", sa.String(length=40), nullable=True),
        sa.Column("rider_id", sa.String(length=40), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("amount_minor", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("payer", sa.String(length=120), nullable=True),
        sa.Column("provider_ref", sa.String(length=80), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    op.create_index(op.f("ix_payments_created_at"), "payments", ["created_at"], unique=False)
    op.create_index(op.f("ix_payments_order_id"), "payments", ["order_id"], unique=False)
    op.create_index(op.f("ix_payments_rider_id"), "payments", ["rider_id"], unique=False)
    op.create_table(
        "reconciliation_exceptions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("ref", sa.String(length=160), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("ours_minor", sa.BigInteger(), nullable=True),
        sa.Column("theirs_minor", sa.BigInteger(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("day", "provider", "ref"),
    )
    op.create_index(op.f("ix_reconciliation_exceptions_day"), "reconciliation_exceptions", ["day"], unique=False)
    op.create_table(
        "reconciliation_runs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("ours", sa.Integer(), nullable=False),
        sa.Column("theirs", sa.Integer(), nullable=False),
        sa.Column("matched", sa.Integer(), nullable=False),
        sa.Column("exceptions", sa.Integer(), nullable=False),
        sa.Column("ran_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("day", "provider"),
    )
    op.create_table(
        "refunds",
        sa.Column("id", sa.String(length=80), nullable=False),
        sa.Column("key", sa.String(length=120), nullable=False),
        sa.Column("payment_key", sa.String(length=120), nullable=False),
        sa.Column("order_id", sa.String(length=40), nullable=True),
        sa.Column("rider_id", sa.String(length=40), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("amount_minor", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("origin", sa.String(length=24), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("provider_status", sa.String(length=16), nullable=True),
        sa.Column("provider_ref", sa.String(length=80), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expected_by", sa.DateTime(timezone=True), nullable=True),
        sa.Column("final_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("escalated", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    op.create_index(op.f("ix_refunds_expected_by"), "refunds", ["expected_by"], unique=False)
    op.create_index(op.f("ix_refunds_order_id"), "refunds", ["order_id"], unique=False)
    op.create_index(op.f("ix_refunds_payment_key"), "refunds", ["payment_key"], unique=False)
    op.create_index(op.f("ix_refunds_rider_id"), "refunds", ["rider_id"], unique=False)
    op.create_index(op.f("ix_refunds_status"), "refunds", ["status"], unique=False)
    op.create_table(
        "subscription_plans",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("swaps_per_period", sa.Integer(), nullable=False),
        sa.Column("period_days", sa.Integer(), nullable=False),
        sa.Column("price_minor", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "rider_payment_methods",
        sa.Column("rider_id", sa.String(length=40), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("payer", sa.String(length=120), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["rider_id"],
            ["riders.id"],
        ),
        sa.PrimaryKeyConstraint("rider_id"),
    )
    op.create_table(
        "subscription_uses",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("key", sa.String(length=120), nullable=False),
        sa.Column("rider_id", sa.String(length=40), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("amount_minor", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("refund_key", sa.String(length=120), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("returned_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["rider_id"],
            ["riders.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
        sa.UniqueConstraint("refund_key"),
    )
    op.create_index(op.f("ix_subscription_uses_at"), "subscription_uses", ["at"], unique=False)
    op.create_index(op.f("ix_subscription_uses_rider_id"), "subscription_uses", ["rider_id"], unique=False)
    op.create_table(
        "subscriptions",
        sa.Column("rider_id", sa.String(length=40), nullable=False),
        sa.Column("plan_id", sa.String(length=40), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["subscription_plans.id"],
        ),
        sa.ForeignKeyConstraint(
            ["rider_id"],
            ["riders.id"],
        ),
        sa.PrimaryKeyConstraint("rider_id"),
    )
    op.create_table(
        "wallet_entries",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("key", sa.String(length=120), nullable=False),
        sa.Column("rider_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("payment_key", sa.String(length=120), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["rider_id"],
            ["riders.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    op.create_index(op.f("ix_wallet_entries_at"), "wallet_entries", ["at"], unique=False)
    op.create_index(op.f("ix_wallet_entries_payment_key"), "wallet_entries", ["payment_key"], unique=False)
    op.create_index(op.f("ix_wallet_entries_rider_id"), "wallet_entries", ["rider_id"], unique=False)
    op.create_table(
        "wallets",
        sa.Column("rider_id", sa.String(length=40), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("balance_minor", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["rider_id"],
            ["riders.id"],
        ),
        sa.PrimaryKeyConstraint("rider_id"),
    )
    op.create_table(
        "complaints",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("rider_id", sa.String(length=40), nullable=False),
        sa.Column("order_id", sa.String(length=40), nullable=False),
        sa.Column("amount_minor", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("refund_id", sa.String(length=80), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["swap_orders.id"],
        ),
        sa.ForeignKeyConstraint(
            ["rider_id"],
            ["riders.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_complaints_order_id"), "complaints", ["order_id"], unique=False)
    op.create_index(op.f("ix_complaints_rider_id"), "complaints", ["rider_id"], unique=False)
    with op.batch_alter_table("sandbox_refunds") as batch:
        batch.add_column(sa.Column("settles_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("final_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sandbox_refunds") as batch:
        batch.drop_column("final_at")
        batch.drop_column("settles_at")
    op.drop_index(op.f("ix_complaints_rider_id"), table_name="complaints")
    op.drop_index(op.f("ix_complaints_order_id"), table_name="complaints")
    op.drop_table("complaints")
    op.drop_table("wallets")
    op.drop_index(op.f("ix_wallet_entries_rider_id"), table_name="wallet_entries")
    op.drop_index(op.f("ix_wallet_entries_payment_key"), table_name="wallet_entries")
    op.drop_index(op.f("ix_wallet_entries_at"), table_name="wallet_entries")
    op.drop_table("wallet_entries")
    op.drop_table("subscriptions")
    op.drop_index(op.f("ix_subscription_uses_rider_id"), table_name="subscription_uses")
    op.drop_index(op.f("ix_subscription_uses_at"), table_name="subscription_uses")
    op.drop_table("subscription_uses")
    op.drop_table("rider_payment_methods")
    op.drop_table("subscription_plans")
    op.drop_index(op.f("ix_refunds_status"), table_name="refunds")
    op.drop_index(op.f("ix_refunds_rider_id"), table_name="refunds")
    op.drop_index(op.f("ix_refunds_payment_key"), table_name="refunds")
    op.drop_index(op.f("ix_refunds_order_id"), table_name="refunds")
    op.drop_index(op.f("ix_refunds_expected_by"), table_name="refunds")
    op.drop_table("refunds")
    op.drop_table("reconciliation_runs")
    op.drop_index(op.f("ix_reconciliation_exceptions_day"), table_name="reconciliation_exceptions")
    op.drop_table("reconciliation_exceptions")
    op.drop_index(op.f("ix_payments_rider_id"), table_name="payments")
    op.drop_index(op.f("ix_payments_order_id"), table_name="payments")
    op.drop_index(op.f("ix_payments_created_at"), table_name="payments")
    op.drop_table("payments")
