"""Riders signing in: the one-time codes sent to their phones, their refresh tokens, and the dev SMS inbox."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from swapflow.db.base import Base


class SignInCode(Base):
    """A code sent to a phone, kept only as a salted SHA-256. Only a phone's latest code signs in; the rows
    are also what the per-phone and per-address rate limits count."""

    __tablename__ = "rider_sign_in_codes"
    __table_args__ = (
        Index("ix_rider_sign_in_codes_phone_created", "phone", "created_at"),
        Index("ix_rider_sign_in_codes_address_created", "client_address", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    phone: Mapped[str] = mapped_column(String(20))
    salt: Mapped[str] = mapped_column(String(32))
    code_hash: Mapped[str] = mapped_column(String(64))
    client_address: Mapped[str] = mapped_column(String(64), doc="Who asked for it (the rate limit's key).")
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(Integer, default=0, doc="Wrong codes tried against it.")
    used_at: Mapped[datetime | None] = mapped_column(nullable=True)


class RefreshToken(Base):
    """A rider's refresh token, kept only as its SHA-256. Each refresh uses one up and issues the next in
    the same family; a used one presented again revokes the whole family and the access tokens it gave."""

    __tablename__ = "rider_refresh_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    family_id: Mapped[str] = mapped_column(String(40), index=True)
    rider_id: Mapped[str] = mapped_column(ForeignKey("riders.id"), index=True)
    access_token_hash: Mapped[str] = mapped_column(String(64), index=True, doc="The access token issued with it.")
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None] = mapped_column(nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)


class DevSmsMessage(Base):
    """A text the development SMS sender 'sent': what GET /v1/dev/sms-inbox shows, to every process."""

    __tablename__ = "dev_sms_messages"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    phone: Mapped[str] = mapped_column(String(20), index=True)
    text: Mapped[str] = mapped_column(Text)
    sent_at: Mapped[datetime]
