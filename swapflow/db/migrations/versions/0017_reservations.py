"""riders' reservations of charged packs, and the slot a reservation holds

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-08 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIVE = sa.text("status = 'active'")


def upgrade() -> None:
    op.create_table(
        "reservations",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("rider_id", sa.String(40), sa.ForeignKey("riders.id"), nullable=False),
        sa.Column("idempotency_key", sa.String(100), nullable=False),
        sa.Column("cabinet_id", sa.String(40), sa.ForeignKey("cabinets.id"), nullable=False),
        sa.Column("slot_no", sa.Integer(), nullable=False),
        sa.Column("battery_serial", sa.String(40), sa.ForeignKey("batteries.serial"), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("used_by_order_id", sa.String(40), nullable=True),
        sa.Column("ended_by", sa.String(60), nullable=True),
        sa.Column("no_show_fee_minor", sa.Integer(), nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.UniqueConstraint("rider_id", "idempotency_key"),
    )
    op.create_index(
        "uq_reservations_active_rider",
        "reservations",
        ["rider_id"],
        unique=True,
        sqlite_where=ACTIVE,
        postgresql_where=ACTIVE,
    )
    op.create_index("ix_reservations_battery", "reservations", ["battery_serial"])
    op.create_index("ix_reservations_rider_ended", "reservations", ["rider_id", "ended_at"])
    op.create_index("ix_reservations_used_by_order", "reservations", ["used_by_order_id"])
    # No index: a slot is found by its reservation's cabinet and number, and the slots' live updates stay in place.
    with op.batch_alter_table("slots") as batch:
        batch.add_column(sa.Column("reservation_id", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("slots") as batch:
        batch.drop_column("reservation_id")
    op.drop_index("ix_reservations_used_by_order", "reservations")
    op.drop_index("ix_reservations_rider_ended", "reservations")
    op.drop_index("ix_reservations_battery", "reservations")
    op.drop_index("uq_reservations_active_rider", "reservations")
    op.drop_table("reservations")
