"""device identity: cabinet credentials, tower-protocol gateway (issue 5)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 05:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("cabinets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("protocol", sa.String(length=8), server_default="v1", nullable=False))
    op.create_table(
        "cabinet_credentials",
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("cabinet_id", sa.String(length=40), nullable=True),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["cabinet_id"],
            ["cabinets.id"],
        ),
        sa.PrimaryKeyConstraint("username"),
        sa.UniqueConstraint("cabinet_id"),
    )


def downgrade() -> None:
    op.drop_table("cabinet_credentials")
    with op.batch_alter_table("cabinets", schema=None) as batch_op:
        batch_op.drop_column("protocol")
