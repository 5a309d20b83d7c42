"""pricing rules and coupons (issue 4, pricing)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22 05:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "price_rules",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("adjustment", sa.String(length=8), nullable=False),
        sa.Column("value", sa.Integer(), nullable=False),
        sa.Column("city_code", sa.String(length=16), nullable=True),
        sa.Column("battery_model", sa.String(length=40), nullable=True),
        sa.Column("start_local", sa.Time(), nullable=True),
        sa.Column("end_local", sa.Time(), nullable=True),
        sa.Column("weekdays", sa.JSON(), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=True),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["city_code"],
            ["cities.code"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("price_rules", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_price_rules_city_code"), ["city_code"], unique=False)

    op.create_table(
        "coupons",
        sa.Column("code", sa.String(length=40), nullable=False),
        sa.Column("description", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("value", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=True),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("max_redemptions", sa.Integer(), nullable=True),
        sa.Column("max_per_rider", sa.Integer(), nullable=True),
        sa.Column("min_price_minor", sa.Integer(), nullable=False),
        sa.Column("max_discount_minor", sa.Integer(), nullable=True),
        sa.Column("city_codes", sa.JSON(), nullable=True),
        sa.Column("battery_models", sa.JSON(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("redeemed_count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("code"),
    )

    op.create_table(
        "coupon_redemptions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("coupon_code", sa.String(length=40), nullable=False),
        sa.Column("order_id", sa.String(length=40), nullable=False),
        sa.Column("rider_id", sa.String(length=40), nullable=False),
        sa.Column("rider_seq", sa.Integer(), nullable=True),
        sa.Column("discount_minor", sa.Integer(), nullable=False),
        sa.Column("redeemed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("release_reason", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["coupon_code"],
            ["coupons.code"],
        ),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["swap_orders.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("coupon_code", "rider_id", "rider_seq"),
        sa.UniqueConstraint("order_id"),
    )
    with op.batch_alter_table("coupon_redemptions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_coupon_redemptions_coupon_code"), ["coupon_code"], unique=False)
        batch_op.create_index(batch_op.f("ix_coupon_redemptions_rider_id"), ["rider_id"], unique=False)

    with op.batch_alter_table("swap_orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("coupon_code", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("price_breakdown", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("swap_orders", schema=None) as batch_op:
        batch_op.drop_column("price_breakdown")
        batch_op.drop_column("coupon_code")

    with op.batch_alter_table("coupon_redemptions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_coupon_redemptions_rider_id"))
        batch_op.drop_index(batch_op.f("ix_coupon_redemptions_coupon_code"))
    op.drop_table("coupon_redemptions")
    op.drop_table("coupons")
    with op.batch_alter_table("price_rules", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_price_rules_city_code"))
    op.drop_table("price_rules")
