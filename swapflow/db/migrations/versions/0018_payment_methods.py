"""riders' payment methods, many per rider with one default; Stripe customers; plans riders buy

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-08 09:00:00
"""

import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LABELS = {"wechat": "WeChat Pay", "stripe": "Card", "wallet": "Wallet", "subscription": "Plan", "sandbox": "Sandbox"}

old_methods = sa.table(
    "rider_payment_methods",
    sa.column("rider_id", sa.String),
    sa.column("method", sa.String),
    sa.column("payer", sa.String),
    sa.column("updated_at", sa.DateTime(timezone=True)),
)
new_methods = sa.table(
    "rider_payment_methods",
    sa.column("id", sa.String),
    sa.column("rider_id", sa.String),
    sa.column("method", sa.String),
    sa.column("payer", sa.String),
    sa.column("provider_ref", sa.String),
    sa.column("label", sa.String),
    sa.column("is_default", sa.Boolean),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("removed_at", sa.DateTime(timezone=True)),
)


def _new_row(rider_id: str, method: str, payer: str | None, at: Any) -> dict[str, Any]:
    """An old one-per-rider row as the rider's default method. A Stripe payer (`cus_…/pm_…` or `pm_…`)
    is split into the customer and the card."""
    provider_ref = None
    if method == "stripe" and payer:
        customer, _, card = payer.rpartition("/")
        payer, provider_ref = customer or None, card
    return {
        "id": f"rpm_{uuid.uuid4().hex[:20]}",
        "rider_id": rider_id,
        "method": method,
        "payer": payer,
        "provider_ref": provider_ref,
        "label": LABELS.get(method, method),
        "is_default": True,
        "created_at": at,
        "removed_at": None,
    }


def _create_methods() -> None:
    op.create_table(
        "rider_payment_methods",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("rider_id", sa.String(40), sa.ForeignKey("riders.id"), nullable=False, index=True),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("payer", sa.String(120), nullable=True),
        sa.Column("provider_ref", sa.String(80), nullable=True),
        sa.Column("label", sa.String(80), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(
        "uq_rider_payment_methods_default",
        "rider_payment_methods",
        ["rider_id"],
        unique=True,
        sqlite_where=sa.text("is_default"),
        postgresql_where=sa.text("is_default"),
    )


def upgrade() -> None:
    bind = op.get_bind()
    # The table changes its key: its rows are read, the table made anew, and each row written back as
    # its rider's default method (one per rider before, so each is the default).
    rows = bind.execute(sa.select(old_methods)).all()
    op.drop_table("rider_payment_methods")
    _create_methods()
    if rows:
        op.bulk_insert(new_methods, [_new_row(row.rider_id, row.method, row.payer, row.updated_at) for row in rows])
    op.create_table(
        "stripe_customers",
        sa.Column("rider_id", sa.String(40), sa.ForeignKey("riders.id"), primary_key=True),
        sa.Column("customer_id", sa.String(80), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("payments") as batch:
        batch.add_column(sa.Column("client_params", sa.JSON(), nullable=True))
    with op.batch_alter_table("subscription_plans") as batch:
        batch.add_column(sa.Column("city_code", sa.String(16), nullable=True))
        batch.add_column(sa.Column("for_sale", sa.Boolean(), nullable=False, server_default=sa.true()))
        batch.create_foreign_key("fk_subscription_plans_city_code", "cities", ["city_code"], ["code"])
        batch.create_index("ix_subscription_plans_city_code", ["city_code"])
    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(sa.Column("paid_until", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "plan_purchases",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("rider_id", sa.String(40), sa.ForeignKey("riders.id"), nullable=False, index=True),
        sa.Column("idempotency_key", sa.String(100), nullable=False),
        sa.Column("plan_id", sa.String(40), sa.ForeignKey("subscription_plans.id"), nullable=False),
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
    op.create_index(
        "uq_plan_purchases_pending",
        "plan_purchases",
        ["rider_id"],
        unique=True,
        sqlite_where=sa.text("status = 'pending'"),
        postgresql_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index("uq_plan_purchases_pending", table_name="plan_purchases")
    op.drop_table("plan_purchases")
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("paid_until")
    with op.batch_alter_table("subscription_plans") as batch:
        batch.drop_index("ix_subscription_plans_city_code")
        batch.drop_constraint("fk_subscription_plans_city_code", type_="foreignkey")
        batch.drop_column("for_sale")
        batch.drop_column("city_code")
    with op.batch_alter_table("payments") as batch:
        batch.drop_column("client_params")
    op.drop_table("stripe_customers")
    # Back to one method per rider: each rider's default, its Stripe customer and card joined again.
    bind = op.get_bind()
    defaults = bind.execute(
        sa.select(new_methods).where(new_methods.c.is_default.is_(True), new_methods.c.removed_at.is_(None))
    ).all()
    op.drop_index("uq_rider_payment_methods_default", table_name="rider_payment_methods")
    op.drop_table("rider_payment_methods")
    op.create_table(
        "rider_payment_methods",
        sa.Column("rider_id", sa.String(40), sa.ForeignKey("riders.id"), primary_key=True),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("payer", sa.String(120), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    if defaults:
        op.bulk_insert(
            old_methods,
            [
                {
                    "rider_id": row.rider_id,
                    "method": row.method,
                    "payer": "/".join(part for part in (row.payer, row.provider_ref) if part) or None,
                    "updated_at": row.created_at,
                }
                for row in defaults
            ],
        )
