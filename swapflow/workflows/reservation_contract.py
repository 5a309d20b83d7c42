"""The reservation workflow's contract: its input, signals, the activity it calls and what it ends with.
No I/O."""

from __future__ import annotations

from enum import StrEnum

from temporalio import activity

from swapflow.domain import timing
from swapflow.domain.reservations import ReservationStatus
from swapflow.workflows.contract import Contract

CANCEL_SIGNAL = "cancel"
USED_SIGNAL = "used"


class ReservationStart(Contract):
    """Input of workflow `reservation/<reservation_id>`: the pack is held for `hold_s` at most."""

    reservation_id: str
    hold_s: float = timing.RESERVATION_HOLD_S


class ReservationCancel(Contract):
    """Signal `cancel`: let the pack go (who asked: the rider or an operator)."""

    by: str


class ReservationUsed(Contract):
    """Signal `used`: a swap of the rider at the cabinet took the pack (its admission marked it used)."""

    order_id: str


class Ending(StrEnum):
    """Why the workflow asks to end the reservation."""

    HOLD_RAN_OUT = "hold_ran_out"
    CANCELLED = "cancelled"
    USED = "used"


class ReservationEnd(Contract):
    """End a reservation still active for `ending` (one already ended is left as it is)."""

    reservation_id: str
    ending: Ending
    by: str | None = None


class ReservationOutcome(Contract):
    """How a reservation stands after an end step; `active`: nothing ended it (a `used` signal that the
    database does not bear out), so the hold goes on."""

    reservation_id: str
    status: ReservationStatus
    used_by_order_id: str | None = None
    no_show_fee_minor: int | None = None


# ---------------------------------------------------------------------------------- activities
# The reservation's activity, by name and types: the workflow calls this, never the implementation the
# worker registers (swapflow.activities.reservation), so its I/O stays out of the sandbox.


@activity.defn(name="end_reservation")
async def end_reservation(end: ReservationEnd) -> ReservationOutcome:
    """Release the held pack and record how the reservation ended (a no-show counted and its fee recorded)."""
    raise NotImplementedError


def reservation_workflow_id(reservation_id: str) -> str:
    """The workflow that holds reservation `reservation_id`'s pack until it is used, cancelled or runs out."""
    return f"reservation/{reservation_id}"
