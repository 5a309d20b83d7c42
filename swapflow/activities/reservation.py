"""The reservation workflow's database step: end a reservation that still holds its pack. Idempotent: a
retry, or a reservation a swap or a cancel already ended, finds it ended and changes nothing."""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from swapflow.db.engine import Database
from swapflow.db.reservations import Reservation
from swapflow.domain.reservations import ReservationStatus
from swapflow.services.reservations import end_hold, pack_waited
from swapflow.settings import Settings
from swapflow.workflows.reservation_contract import Ending, ReservationEnd, ReservationOutcome


class ReservationActivities:
    """What the reservation workflow does; one instance per worker."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    @activity.defn(name="end_reservation")
    async def end(self, end: ReservationEnd) -> ReservationOutcome:
        """Cancelled: release the pack. Hold ran out: release it, a no-show if the pack waited for the rider
        to the end (counted, its fee recorded), else expired. Used: the swap's admission already ended it;
        this only reads how."""
        async with self.db.transaction() as session:
            reservation = await session.get(Reservation, end.reservation_id, with_for_update=True)
            if reservation is None:
                raise ApplicationError(f"no reservation {end.reservation_id}", non_retryable=True)
            if reservation.status == ReservationStatus.ACTIVE and end.ending != Ending.USED:
                if end.ending == Ending.CANCELLED:
                    status = ReservationStatus.CANCELLED
                elif await pack_waited(session, reservation):
                    status = ReservationStatus.NO_SHOW
                else:
                    status = ReservationStatus.EXPIRED
                await end_hold(session, self.settings, reservation, status, by=end.by)
            return ReservationOutcome(
                reservation_id=reservation.id,
                status=reservation.status,
                used_by_order_id=reservation.used_by_order_id,
                no_show_fee_minor=reservation.no_show_fee_minor,
            )
