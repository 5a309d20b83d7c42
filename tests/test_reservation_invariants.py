"""The invariant check's reservation rules: a reserved pack is never issued to another rider.

Reservations are held and ended, and swaps run, through the real service steps and activities (no
workflow), so the rows a clean run leaves are the ones the API and the worker write. Each test then
breaks exactly one rule by writing rows directly, and expects exactly that rule, about exactly that
subject, to be reported."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from swapflow.activities.payments import PaymentActivities
from swapflow.activities.reservation import ReservationActivities
from swapflow.activities.swap import SwapRecords
from swapflow.db.engine import Database
from swapflow.db.network import Slot
from swapflow.db.reservations import Reservation
from swapflow.db.swaps import SwapOrder
from swapflow.domain.clock import utcnow
from swapflow.domain.network import slot_ref
from swapflow.domain.reservations import ReservationStatus
from swapflow.domain.swaps import SwapStatus
from swapflow.ops.invariants import InvariantReport, Rule, check_invariants
from swapflow.payments.registry import providers_from_settings
from swapflow.protocol.v1 import BatteryReading
from swapflow.services.reservations import open_reservation
from swapflow.settings import Settings
from swapflow.workflows.reservation_contract import Ending, ReservationEnd
from swapflow.workflows.swap_contract import ChargeInput, ReturnCheck, SwapFinish, SwapRequest
from tests.swap_harness import new_order, set_online

CABINET = "cab-sh-001-1"
RIDER, OTHER_RIDER = "rider-sh-0001", "rider-sh-0002"


def found(report: InvariantReport) -> set[tuple[str, str]]:
    """Each violation as (rule, subject)."""
    return {(v.rule, v.subject) for v in report.violations}


class Scene:
    """Reservations at CABINET and swaps there, through the real steps."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.records = SwapRecords(db, settings)
        self.payments = PaymentActivities(db, providers_from_settings(settings, db), settings)
        self.ends = ReservationActivities(db, settings)

    async def reserve(self, rider_id: str, key: str = "k1") -> Reservation:
        async with self.db.transaction() as session:
            reservation, _ = await open_reservation(
                session, self.settings, rider_id=rider_id, cabinet_id=CABINET, idempotency_key=key
            )
        return reservation

    async def end(self, reservation: Reservation, ending: Ending) -> None:
        await self.ends.end(ReservationEnd(reservation_id=reservation.id, ending=ending, by=reservation.rider_id))

    async def completed_swap(self, rider_id: str) -> SwapOrder:
        """A swap of the rider at CABINET, run to completion: admitted, charged, pack returned and checked,
        the charged pack issued."""
        order_id = await new_order(self.db, rider_id, CABINET)
        admission = await self.records.admit(SwapRequest(order_id=order_id, rider_id=rider_id, cabinet_id=CABINET))
        await self.payments.charge(
            ChargeInput(order_id=order_id, amount_minor=admission.price_minor, currency=admission.currency)
        )
        reading = BatteryReading(
            serial=admission.rider_battery_serial,
            soc=15.0,
            soh=90.0,
            voltage_v=56.0,
            temperature_c=25.0,
            cycle_count=100,
        )
        await self.records.accept_return(
            ReturnCheck(
                order_id=order_id,
                rider_id=rider_id,
                cabinet_id=CABINET,
                slot_no=admission.return_slot_no,
                expected_serial=admission.rider_battery_serial,
                reading=reading,
            )
        )
        await self.records.finish(SwapFinish(order_id=order_id, status=SwapStatus.COMPLETED))
        async with self.db.sessions() as session:
            order = await session.get(SwapOrder, order_id)
        assert order is not None
        return order

    async def write(self, model: type, *where: object, **values: object) -> None:
        async with self.db.transaction() as session:
            await session.execute(update(model).where(*where).values(**values))

    async def report(self, **options: timedelta) -> set[tuple[str, str]]:
        return found(await check_invariants(self.db, **options))


@pytest.fixture
async def scene(db: Database, settings: Settings) -> Scene:
    await set_online(db, CABINET, True)  # seeded offline
    return Scene(db, settings)


async def test_reservations_used_cancelled_and_run_out_keep_every_invariant(scene: Scene) -> None:
    used = await scene.reserve(RIDER)
    order = await scene.completed_swap(RIDER)
    assert order.issued_battery_serial == used.battery_serial
    await scene.end(used, Ending.USED)
    cancelled = await scene.reserve(OTHER_RIDER)
    await scene.end(cancelled, Ending.CANCELLED)
    no_show = await scene.reserve(OTHER_RIDER, "k2")
    await scene.end(no_show, Ending.HOLD_RAN_OUT)
    still_held = await scene.reserve(RIDER, "k2")
    assert await scene.report(stuck_after=timedelta(hours=1)) == set()
    assert still_held.status == ReservationStatus.ACTIVE


async def test_a_pack_issued_while_another_riders_reservation_held_it_is_reported(scene: Scene) -> None:
    held = await scene.reserve(OTHER_RIDER)
    # A pick that ignored the hold: the slot forgets it, and the rider's swap takes the pack.
    await scene.write(Slot, Slot.reservation_id == held.id, reservation_id=None)
    order = await scene.completed_swap(RIDER)
    assert order.issued_battery_serial == held.battery_serial
    await scene.write(  # the hold then ran out, with nothing left to release
        Reservation, Reservation.id == held.id, status=ReservationStatus.EXPIRED, ended_at=utcnow()
    )
    assert await scene.report() == {(Rule.RESERVATION_ISSUED_TO_ANOTHER, held.id)}


async def test_a_reservation_used_by_another_riders_swap_is_reported(scene: Scene) -> None:
    held = await scene.reserve(OTHER_RIDER)
    other_order = await new_order(scene.db, RIDER, CABINET)
    await scene.write(
        Reservation,
        Reservation.id == held.id,
        status=ReservationStatus.USED,
        used_by_order_id=other_order,
        ended_at=utcnow(),
    )
    await scene.write(Slot, Slot.reservation_id == held.id, reservation_id=None)
    assert await scene.report() == {(Rule.RESERVATION_USED_BY_ANOTHER, held.id)}


async def test_an_active_reservation_its_slot_does_not_hold_is_reported(scene: Scene) -> None:
    held = await scene.reserve(RIDER)
    await scene.write(Slot, Slot.reservation_id == held.id, reservation_id=None)
    assert await scene.report() == {(Rule.RESERVATION_HOLD_MISMATCH, held.id)}


async def test_a_slot_held_for_a_reservation_that_ended_is_reported(scene: Scene) -> None:
    held = await scene.reserve(RIDER)
    await scene.write(Reservation, Reservation.id == held.id, status=ReservationStatus.CANCELLED, ended_at=utcnow())
    assert await scene.report() == {(Rule.RESERVATION_HOLD_MISMATCH, slot_ref(CABINET, held.slot_no))}


async def test_a_reservation_still_active_long_past_its_expiry_is_reported_as_overdue(scene: Scene) -> None:
    held = await scene.reserve(RIDER)
    await scene.write(Reservation, Reservation.id == held.id, expires_at=utcnow() - timedelta(hours=2))
    assert await scene.report() == set()  # only a check that is told when a hold is overdue reports it
    assert await scene.report(stuck_after=timedelta(hours=1)) == {(Rule.RESERVATION_OVERDUE, held.id)}
