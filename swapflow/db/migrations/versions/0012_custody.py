"""slots remember what their cabinet last reported in them; a custody discrepancy may name its swap

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 05:30:00

`slots.reported_serial` / `reported_at`: the pack a cabinet last reported in the slot (by an event or
a birth), which `swapflow check` compares with custody. `custody_discrepancies.order_id`: the ended
swap a late device event belonged to, for finance to review.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("slots", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reported_serial", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("reported_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("custody_discrepancies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("order_id", sa.String(length=40), nullable=True))
        batch_op.create_index(batch_op.f("ix_custody_discrepancies_order_id"), ["order_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("custody_discrepancies", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_custody_discrepancies_order_id"))
        batch_op.drop_column("order_id")
    with op.batch_alter_table("slots", schema=None) as batch_op:
        batch_op.drop_column("reported_at")
        batch_op.drop_column("reported_serial")
