"""device network: online transitions, telemetry history, command queues (issue 5)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 05:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("batteries", sa.Column("current_a", sa.Float(), nullable=True))
    op.add_column("batteries", sa.Column("charge_state", sa.String(length=12), nullable=True))
    op.create_table(
        "cabinet_presence",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("cabinet_id", sa.String(length=40), sa.ForeignKey("cabinets.id"), nullable=False),
        sa.Column("online", sa.Boolean(), nullable=False),
        sa.Column("cause", sa.String(length=24), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_cabinet_presence_cabinet_at", "cabinet_presence", ["cabinet_id", "at"])
    op.create_table(
        "battery_readings",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("battery_serial", sa.String(length=40), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("soc", sa.Float(), nullable=False),
        sa.Column("soh", sa.Float(), nullable=False),
        sa.Column("voltage_v", sa.Float(), nullable=False),
        sa.Column("current_a", sa.Float(), nullable=False),
        sa.Column("temperature_c", sa.Float(), nullable=False),
        sa.Column("cycle_count", sa.Integer(), nullable=False),
        sa.Column("cabinet_id", sa.String(length=40), nullable=True),
        sa.Column("slot_no", sa.Integer(), nullable=True),
    )
    op.create_index("ix_battery_readings_serial_at", "battery_readings", ["battery_serial", "at"])
    op.create_table(
        "cabinet_health",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("cabinet_id", sa.String(length=40), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("temperature_c", sa.Float(), nullable=True),
        sa.Column("batteries", sa.Integer(), nullable=False),
        sa.Column("charging", sa.Integer(), nullable=False),
        sa.Column("faults", sa.Integer(), nullable=False),
        sa.Column("doors_open", sa.Integer(), nullable=False),
    )
    op.create_index("ix_cabinet_health_cabinet_at", "cabinet_health", ["cabinet_id", "at"])
    op.create_table(
        "custody_discrepancies",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("cabinet_id", sa.String(length=40), sa.ForeignKey("cabinets.id"), nullable=False),
        sa.Column("slot_no", sa.Integer(), nullable=False),
        sa.Column("expected_serial", sa.String(length=40), nullable=True),
        sa.Column("reported_serial", sa.String(length=40), nullable=True),
        sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("cabinet_id", "slot_no", "detected_at"),
    )
    op.create_index("ix_custody_discrepancies_cabinet_id", "custody_discrepancies", ["cabinet_id"])


def downgrade() -> None:
    op.drop_index("ix_custody_discrepancies_cabinet_id", table_name="custody_discrepancies")
    op.drop_table("custody_discrepancies")
    op.drop_index("ix_cabinet_health_cabinet_at", table_name="cabinet_health")
    op.drop_table("cabinet_health")
    op.drop_index("ix_battery_readings_serial_at", table_name="battery_readings")
    op.drop_table("battery_readings")
    op.drop_index("ix_cabinet_presence_cabinet_at", table_name="cabinet_presence")
    op.drop_table("cabinet_presence")
    with op.batch_alter_table("batteries") as batch:
        batch.drop_column("charge_state")
        batch.drop_column("current_a")
