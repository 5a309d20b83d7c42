"""when the provider took a charge and returned a refund, so reconciliation dates each movement as the
provider's statement does

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 05:30:00

A WeChat bill lists a refund on the day it succeeded, not the day it was submitted; a charge is on a
statement from when it was captured, not from when our record of it was written.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("payments") as batch:
        batch.add_column(sa.Column("captured_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("refunds") as batch:
        batch.add_column(sa.Column("succeeded_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("refunds") as batch:
        batch.drop_column("succeeded_at")
    with op.batch_alter_table("payments") as batch:
        batch.drop_column("captured_at")
