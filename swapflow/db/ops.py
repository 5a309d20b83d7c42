"""Operations: alerts and their deliveries, technicians, work orders and their timelines."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from swapflow.db.base import Base
from swapflow.domain.clock import utcnow
from swapflow.domain.ops import AlertStatus, WorkOrderStatus


class Alert(Base):
    """Something a person must look at. One open alert per `dedupe_key`; a repeat counts occurrences."""

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_cabinet_status", "cabinet_id", "status"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(40), index=True)
    severity: Mapped[str] = mapped_column(String(16), doc="info | warning | critical")
    dedupe_key: Mapped[str] = mapped_column(String(160), index=True)
    status: Mapped[AlertStatus] = mapped_column(String(16), default=AlertStatus.OPEN, index=True)
    cabinet_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    slot_no: Mapped[int | None] = mapped_column(Integer, nullable=True)
    battery_serial: Mapped[str | None] = mapped_column(String(40), nullable=True)
    order_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    message: Mapped[str] = mapped_column(Text)
    occurrences: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(nullable=True)
    acknowledged_at: Mapped[datetime | None] = mapped_column(nullable=True, doc="When a person took it on.")
    acknowledged_by: Mapped[str | None] = mapped_column(String(40), nullable=True)
    resolved_by: Mapped[str | None] = mapped_column(
        String(40), nullable=True, doc="Who resolved it by hand; None when its condition cleared by itself."
    )


class AlertDelivery(Base):
    """One attempt to deliver an alert to a channel (webhook): the delivery log."""

    __tablename__ = "alert_deliveries"
    __table_args__ = (UniqueConstraint("alert_id", "event", "channel", "attempt"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    alert_id: Mapped[int] = mapped_column(BigInteger, index=True)
    event: Mapped[str] = mapped_column(String(16), doc="opened | resolved")
    channel: Mapped[str] = mapped_column(String(40))
    attempt: Mapped[int] = mapped_column(Integer)
    ok: Mapped[bool] = mapped_column(Boolean)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(String(300), nullable=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class Technician(Base):
    """The field profile of a technician account: where they are and when they work (city local time)."""

    __tablename__ = "technicians"

    operator_id: Mapped[str] = mapped_column(ForeignKey("operators.id"), primary_key=True)
    city_code: Mapped[str] = mapped_column(ForeignKey("cities.code"), index=True)
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    shift_start_minute: Mapped[int] = mapped_column(Integer, doc="Minutes after local midnight.")
    shift_end_minute: Mapped[int] = mapped_column(Integer, doc="May be below the start: a shift over midnight.")


class WorkOrder(Base):
    """A device problem a person must fix; run by the workflow `workorder/<id>`."""

    __tablename__ = "work_orders"

    id: Mapped[str] = mapped_column(String(80), primary_key=True, doc="<cabinet>.<slot or 0>.<random>")
    dedupe_key: Mapped[str] = mapped_column(String(80), index=True, doc="<cabinet>/<slot or ->")
    cabinet_id: Mapped[str] = mapped_column(ForeignKey("cabinets.id"), index=True)
    slot_no: Mapped[int | None] = mapped_column(Integer, nullable=True)
    city_code: Mapped[str] = mapped_column(String(16), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    severity: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(16), doc="alert | swap | operator")
    alert_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[WorkOrderStatus] = mapped_column(String(16), default=WorkOrderStatus.NEW, index=True)
    technician_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    escalated_to: Mapped[str | None] = mapped_column(String(40), nullable=True)
    reopen_count: Mapped[int] = mapped_column(Integer, default=0)
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    acked_at: Mapped[datetime | None] = mapped_column(nullable=True)
    closed_at: Mapped[datetime | None] = mapped_column(nullable=True)


class WorkOrderEvent(Base):
    """One step of a work order, in order: its timeline. Keyed by the workflow's step number, so a
    retried activity records it once."""

    __tablename__ = "work_order_events"
    __table_args__ = (UniqueConstraint("work_order_id", "seq"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    work_order_id: Mapped[str] = mapped_column(ForeignKey("work_orders.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str | None] = mapped_column(String(40), nullable=True)
    detail: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(default=utcnow)
