"""Riders' reservations of charged packs: which pack, at which slot, for whom, until when, and how each
ended. The slot a reservation holds names it in `slots.reservation_id`, which a swap's pick respects."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from swapflow.db.base import Base
from swapflow.domain.clock import utcnow
from swapflow.domain.reservations import ReservationStatus

_ACTIVE = text("status = 'active'")


class Reservation(Base):
    __tablename__ = "reservations"
    __table_args__ = (
        UniqueConstraint("rider_id", "idempotency_key"),
        # One active reservation per rider, whatever races: the database refuses a second.
        Index("uq_reservations_active_rider", "rider_id", unique=True, sqlite_where=_ACTIVE, postgresql_where=_ACTIVE),
        Index("ix_reservations_battery", "battery_serial"),
        Index("ix_reservations_rider_ended", "rider_id", "ended_at"),
        Index("ix_reservations_used_by_order", "used_by_order_id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    rider_id: Mapped[str] = mapped_column(ForeignKey("riders.id"))
    idempotency_key: Mapped[str] = mapped_column(String(100))
    cabinet_id: Mapped[str] = mapped_column(ForeignKey("cabinets.id"))
    slot_no: Mapped[int] = mapped_column(Integer)
    battery_serial: Mapped[str] = mapped_column(ForeignKey("batteries.serial"), doc="The pack held.")
    status: Mapped[ReservationStatus] = mapped_column(String(12), default=ReservationStatus.ACTIVE)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(doc="When the hold runs out (its workflow's timer).")
    ended_at: Mapped[datetime | None] = mapped_column(nullable=True, doc="When it stopped holding the pack.")
    used_by_order_id: Mapped[str | None] = mapped_column(String(40), nullable=True, doc="The swap that took it.")
    ended_by: Mapped[str | None] = mapped_column(
        String(60), nullable=True, doc="Who cancelled it (the rider, an operator); null otherwise."
    )
    no_show_fee_minor: Mapped[int | None] = mapped_column(
        Integer, nullable=True, doc="The fee a no-show owes (SWAPFLOW_RESERVATION_NO_SHOW_FEE_MINOR), recorded."
    )
    currency: Mapped[str | None] = mapped_column(String(3), nullable=True, doc="Of the fee: the rider's city's.")
