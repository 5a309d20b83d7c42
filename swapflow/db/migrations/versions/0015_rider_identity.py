"""riders: phone, WeChat openid and sign-up time

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 17:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("riders") as batch:
        batch.add_column(sa.Column("phone", sa.String(20), nullable=True))
        batch.add_column(sa.Column("wechat_openid", sa.String(64), nullable=True))
        batch.add_column(sa.Column("created_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_unique_constraint("uq_riders_phone", ["phone"])
        batch.create_unique_constraint("uq_riders_wechat_openid", ["wechat_openid"])


def downgrade() -> None:
    with op.batch_alter_table("riders") as batch:
        batch.drop_constraint("uq_riders_wechat_openid", type_="unique")
        batch.drop_constraint("uq_riders_phone", type_="unique")
        batch.drop_column("created_at")
        batch.drop_column("wechat_openid")
        batch.drop_column("phone")
