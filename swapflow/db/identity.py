"""Who may act: staff accounts, bearer tokens and the cabinets' MQTT credentials."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from swapflow.db.base import Base
from swapflow.domain.clock import utcnow
from swapflow.domain.network import CredentialRole
from swapflow.domain.ops import OperatorRole


class Operator(Base):
    """A staff account. An admin sees every city; everyone else only the cities listed."""

    __tablename__ = "operators"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[OperatorRole] = mapped_column(String(16))
    cities: Mapped[list[str]] = mapped_column(JSON, default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    """A bearer token, kept only as its SHA-256: a leaked table grants nothing."""

    __tablename__ = "api_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    principal_kind: Mapped[str] = mapped_column(String(16), doc="operator | rider")
    principal_id: Mapped[str] = mapped_column(String(40), index=True)
    label: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(
        nullable=True, doc="None: never (operators' and seeded tokens); a rider's signed-in token expires."
    )


class CabinetCredential(Base):
    """MQTT credentials of one cabinet or service account. Only the hash is kept (Mosquitto's `$7$`
    PBKDF2-SHA512 format, so the same line goes into a Mosquitto password file)."""

    __tablename__ = "cabinet_credentials"

    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    cabinet_id: Mapped[str | None] = mapped_column(ForeignKey("cabinets.id"), unique=True, nullable=True)
    role: Mapped[CredentialRole] = mapped_column(String(16), default=CredentialRole.CABINET)
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    rotated_at: Mapped[datetime | None] = mapped_column(nullable=True)
