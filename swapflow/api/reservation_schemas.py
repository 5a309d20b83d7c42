"""Request and response models of the reservation endpoints."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from swapflow.db.reservations import Reservation
from swapflow.domain.reservations import ReservationStatus
from swapflow.workflows.reservation_contract import reservation_workflow_id


class ReservationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cabinet_id: str = Field(min_length=1, max_length=40, description="Where the rider wants a charged pack held.")


class ReservationView(BaseModel):
    """A charged pack held for a rider at a cabinet until `expires_at`, and how the hold ended."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    rider_id: str
    cabinet_id: str
    slot_no: int
    battery_serial: str
    status: ReservationStatus = Field(
        description="active (held) | used (a swap of the rider took it) | cancelled | no_show (the hold ran out "
        "with the pack waiting) | expired (the hold ran out while the pack could not be had)"
    )
    created_at: datetime
    expires_at: datetime
    ended_at: datetime | None
    used_by_order_id: str | None = Field(description="The swap that took the pack.")
    ended_by: str | None = Field(description="Who cancelled it.")
    no_show_fee_minor: int | None = Field(description="The fee a no-show recorded, in `currency`.")
    currency: str | None
    workflow_id: str

    @classmethod
    def of(cls, reservation: Reservation) -> ReservationView:
        return cls.model_validate(
            {
                **{name: getattr(reservation, name) for name in cls.model_fields if name != "workflow_id"},
                "workflow_id": reservation_workflow_id(reservation.id),
            }
        )
