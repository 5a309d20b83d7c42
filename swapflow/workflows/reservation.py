"""The reservation workflow, `reservation/<reservation id>`: a charged pack held for its rider.

Started by `POST /v1/reservations` once the reservation and its slot's hold are written. A durable timer
bounds the hold; signal `cancel` (the rider or an operator let it go) or `used` (a swap of the rider at
the cabinet took the pack) ends it early. Either way one database step ends it: the hold is released and
how it ended recorded; a hold that ran out with the pack still waiting is a no-show (counted, its fee
recorded). The database decides: a swap's admission marks the reservation used by a conditional update,
so a `used` signal that arrives after the timer, or never, changes nothing.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from swapflow.domain.reservations import ReservationStatus
    from swapflow.workflows.reservation_contract import (
        CANCEL_SIGNAL,
        USED_SIGNAL,
        Ending,
        ReservationCancel,
        ReservationEnd,
        ReservationOutcome,
        ReservationStart,
        ReservationUsed,
        end_reservation,
    )

# Releasing a held pack must happen, however long the database is away: retried without a bound.
MUST_COMPLETE = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1))


@workflow.defn(name="Reservation")
class ReservationWorkflow:
    """One reservation: held until used, cancelled or the hold runs out."""

    def __init__(self) -> None:
        self._asked: tuple[Ending, str | None] | None = None  # the first signal's ending, and who asked

    @workflow.signal(name=CANCEL_SIGNAL)
    def cancel(self, cancel: ReservationCancel) -> None:
        """The rider (or an operator) lets the pack go."""
        self._asked = self._asked or (Ending.CANCELLED, cancel.by)

    @workflow.signal(name=USED_SIGNAL)
    def used(self, used: ReservationUsed) -> None:
        """A swap took the pack."""
        self._asked = self._asked or (Ending.USED, None)

    @workflow.run
    async def run(self, start: ReservationStart) -> ReservationOutcome:
        deadline = workflow.now() + timedelta(seconds=start.hold_s)
        while True:
            try:
                await workflow.wait_condition(
                    lambda: self._asked is not None, timeout=max(deadline - workflow.now(), timedelta(milliseconds=1))
                )
            except TimeoutError:
                pass
            ending, by = self._asked or (Ending.HOLD_RAN_OUT, None)
            end = ReservationEnd(reservation_id=start.reservation_id, ending=ending, by=by)
            outcome = await workflow.execute_local_activity(
                end_reservation, end, start_to_close_timeout=timedelta(seconds=30), retry_policy=MUST_COMPLETE
            )
            if outcome.status != ReservationStatus.ACTIVE:
                return outcome
            self._asked = None  # a signal the database does not bear out: the hold goes on
