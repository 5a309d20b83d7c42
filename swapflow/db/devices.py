"""The device trail: commands sent and messages received, dead letters, and telemetry history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from swapflow.db.base import Base
from swapflow.domain.clock import utcnow


class DeviceCommand(Base):
    """A command sent to a cabinet, and its acknowledgement. Links a device message to its workflow."""

    __tablename__ = "device_commands"

    id: Mapped[str] = mapped_column(String(60), primary_key=True, doc="The command id on the wire.")
    cabinet_id: Mapped[str] = mapped_column(ForeignKey("cabinets.id"), index=True)
    slot_no: Mapped[int | None] = mapped_column(Integer, nullable=True)
    action: Mapped[str] = mapped_column(String(24))
    workflow_id: Mapped[str | None] = mapped_column(String(80), nullable=True)
    sent_at: Mapped[datetime] = mapped_column(default=utcnow)
    deadline_at: Mapped[datetime]
    acked_at: Mapped[datetime | None] = mapped_column(nullable=True)
    ok: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    error: Mapped[str | None] = mapped_column(String(200), nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class DeviceMessage(Base):
    """Every accepted door/battery event and ack, once: the dedupe key and the trace of device messages."""

    __tablename__ = "device_messages"
    __table_args__ = (UniqueConstraint("cabinet_id", "message_id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    cabinet_id: Mapped[str] = mapped_column(String(40), index=True)
    message_id: Mapped[str] = mapped_column(String(80))
    kind: Mapped[str] = mapped_column(String(32))
    topic: Mapped[str] = mapped_column(String(200))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    workflow_id: Mapped[str | None] = mapped_column(String(80), nullable=True)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class DeadLetter(Base):
    """A device message that could not be parsed or routed, kept with the reason for an operator."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    topic: Mapped[str] = mapped_column(String(300))
    payload: Mapped[str] = mapped_column(Text, doc="Raw payload, UTF-8 with replacement.")
    reason: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    dedupe_key: Mapped[str | None] = mapped_column(
        String(64),
        nullable=True,
        unique=True,
        doc="The same fault (topic and reason) within one hour: counted on one row, not stored again.",
    )
    occurrences: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    last_seen_at: Mapped[datetime | None] = mapped_column(nullable=True)

    @staticmethod
    def text(data: bytes | str, limit: int) -> str:
        """What a dead letter keeps of a device's bytes: the first `limit`, UTF-8 with replacement, NUL
        escaped (PostgreSQL's text cannot hold it, and the letter would be lost)."""
        raw = data[:limit].decode("utf-8", errors="replace") if isinstance(data, bytes) else data[:limit]
        return raw.replace("\x00", "\\x00")


class BatteryReadingRecord(Base):
    """A pack's BMS reading over time (from cabinet telemetry or its own reports). History, not state:
    rows may be shed when ingestion falls behind. No foreign key, so inserts stay cheap."""

    __tablename__ = "battery_readings"
    __table_args__ = (Index("ix_battery_readings_serial_at", "battery_serial", "at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    battery_serial: Mapped[str] = mapped_column(String(40))
    at: Mapped[datetime]
    soc: Mapped[float] = mapped_column(Float)
    soh: Mapped[float] = mapped_column(Float)
    voltage_v: Mapped[float] = mapped_column(Float)
    current_a: Mapped[float] = mapped_column(Float)
    temperature_c: Mapped[float] = mapped_column(Float)
    cycle_count: Mapped[int] = mapped_column(Integer)
    cabinet_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    slot_no: Mapped[int | None] = mapped_column(Integer, nullable=True)


class CabinetHealthRecord(Base):
    """A cabinet's health over time, one row per telemetry report kept: temperature and slot counts."""

    __tablename__ = "cabinet_health"
    __table_args__ = (Index("ix_cabinet_health_cabinet_at", "cabinet_id", "at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    cabinet_id: Mapped[str] = mapped_column(String(40))
    at: Mapped[datetime]
    temperature_c: Mapped[float | None] = mapped_column(Float, nullable=True)
    batteries: Mapped[int] = mapped_column(Integer)
    charging: Mapped[int] = mapped_column(Integer)
    faults: Mapped[int] = mapped_column(Integer)
    doors_open: Mapped[int] = mapped_column(Integer)
