"""Swap orders and the custody of packs: every change of custodian, each returned pack's safety check,
and what a reconnecting cabinet revealed against custody."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from swapflow.db.base import Base
from swapflow.domain.clock import utcnow
from swapflow.domain.network import CustodianKind
from swapflow.domain.swaps import SwapStage, SwapStatus


class SwapOrder(Base):
    __tablename__ = "swap_orders"
    __table_args__ = (
        UniqueConstraint("rider_id", "idempotency_key"),
        Index("ix_swap_orders_status", "status"),
        Index("ix_swap_orders_cabinet_created", "cabinet_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    rider_id: Mapped[str] = mapped_column(ForeignKey("riders.id"), index=True)
    cabinet_id: Mapped[str] = mapped_column(ForeignKey("cabinets.id"))
    idempotency_key: Mapped[str] = mapped_column(String(100))
    status: Mapped[SwapStatus] = mapped_column(String(16), default=SwapStatus.IN_PROGRESS)
    stage: Mapped[SwapStage] = mapped_column(String(24), default=SwapStage.CREATED)
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    return_slot_no: Mapped[int | None] = mapped_column(Integer, nullable=True)
    charged_slot_no: Mapped[int | None] = mapped_column(Integer, nullable=True)
    returned_battery_serial: Mapped[str | None] = mapped_column(String(40), nullable=True)
    issued_battery_serial: Mapped[str | None] = mapped_column(String(40), nullable=True)
    price_minor: Mapped[int | None] = mapped_column(Integer, nullable=True)
    currency: Mapped[str | None] = mapped_column(String(3), nullable=True)
    payment_ref: Mapped[str | None] = mapped_column(String(80), nullable=True)
    refund_ref: Mapped[str | None] = mapped_column(String(80), nullable=True)
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list, doc="Outcome of each step.")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    return_door_opened_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # pricing: the coupon the rider gave, and how the price came about (swapflow.domain.pricing.Quote)
    coupon_code: Mapped[str | None] = mapped_column(String(40), nullable=True)
    price_breakdown: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class CustodyEvent(Base):
    """One change of a battery's custodian. Append-only."""

    __tablename__ = "custody_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    key: Mapped[str] = mapped_column(String(120), unique=True, doc="Business key; makes retries no-ops.")
    battery_serial: Mapped[str] = mapped_column(ForeignKey("batteries.serial"), index=True)
    from_kind: Mapped[CustodianKind] = mapped_column(String(16))
    from_ref: Mapped[str] = mapped_column(String(60))
    to_kind: Mapped[CustodianKind] = mapped_column(String(16))
    to_ref: Mapped[str] = mapped_column(String(60))
    reason: Mapped[str] = mapped_column(String(200))
    order_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class SafetyEvent(Base):
    """One check of a returned pack: its identity and BMS reading, the limits applied, the verdict."""

    __tablename__ = "safety_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    key: Mapped[str] = mapped_column(String(120), unique=True, doc="swap:<id>:return-check; retries are no-ops.")
    battery_serial: Mapped[str] = mapped_column(String(40), index=True, doc="As reported; may be unknown to us.")
    battery_model: Mapped[str | None] = mapped_column(String(40), nullable=True)
    order_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    cabinet_id: Mapped[str] = mapped_column(String(40))
    slot_no: Mapped[int] = mapped_column(Integer)
    reading: Mapped[dict[str, Any]] = mapped_column(JSON)
    limits: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    verdict: Mapped[str] = mapped_column(String(16), doc="accepted | rejected")
    reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class CustodyDiscrepancy(Base):
    """A slot whose pack, as the cabinet announced it on reconnecting, differs from our custody record:
    a pack moved while the cabinet was offline. Custody is not changed by it; an operator resolves it."""

    __tablename__ = "custody_discrepancies"
    __table_args__ = (UniqueConstraint("cabinet_id", "slot_no", "detected_at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    cabinet_id: Mapped[str] = mapped_column(ForeignKey("cabinets.id"), index=True)
    slot_no: Mapped[int] = mapped_column(Integer)
    expected_serial: Mapped[str | None] = mapped_column(String(40), nullable=True, doc="What custody says.")
    reported_serial: Mapped[str | None] = mapped_column(String(40), nullable=True, doc="What the cabinet says.")
    detected_at: Mapped[datetime] = mapped_column(doc="Time of the birth or the late event that revealed it.")
    resolved_at: Mapped[datetime | None] = mapped_column(nullable=True)
    order_id: Mapped[str | None] = mapped_column(
        String(40), nullable=True, index=True, doc="The ended swap a late event belonged to (finance reviews it)."
    )
