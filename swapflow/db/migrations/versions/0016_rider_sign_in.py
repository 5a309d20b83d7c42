"""riders sign in: one-time codes, refresh tokens, the dev SMS inbox, and expiring API tokens

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-08 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "rider_sign_in_codes",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("phone", sa.String(20), nullable=False),
        sa.Column("salt", sa.String(32), nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("client_address", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_rider_sign_in_codes_phone_created", "rider_sign_in_codes", ["phone", "created_at"])
    op.create_index("ix_rider_sign_in_codes_address_created", "rider_sign_in_codes", ["client_address", "created_at"])
    op.create_table(
        "rider_refresh_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("family_id", sa.String(40), nullable=False, index=True),
        sa.Column("rider_id", sa.String(40), sa.ForeignKey("riders.id"), nullable=False, index=True),
        sa.Column("access_token_hash", sa.String(64), nullable=False, index=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "dev_sms_messages",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("phone", sa.String(20), nullable=False, index=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("dev_sms_messages")
    op.drop_table("rider_refresh_tokens")
    op.drop_index("ix_rider_sign_in_codes_address_created", "rider_sign_in_codes")
    op.drop_index("ix_rider_sign_in_codes_phone_created", "rider_sign_in_codes")
    op.drop_table("rider_sign_in_codes")
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("expires_at")
