"""The invariant check (swapflow.ops.invariants) and `swapflow check`, against a real database.

Swaps are driven through the real activities, so the rows a clean swap leaves are the ones a worker
writes. Each test then breaks exactly one invariant by writing rows directly, and expects exactly that
rule, about exactly that subject, to be reported."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import delete, insert, select, update

from swapflow.activities.payments import PaymentActivities, charge_key
from swapflow.activities.refund import RefundActivities
from swapflow.activities.swap import SwapRecords
from swapflow.cli import main
from swapflow.db.engine import Database, create_sync_engine
from swapflow.db.money import LedgerPosting, LedgerTransaction, Refund, SandboxPayment
from swapflow.db.network import Battery, Slot
from swapflow.db.swaps import CustodyDiscrepancy, CustodyEvent, SwapOrder
from swapflow.domain.clock import utcnow
from swapflow.domain.network import CustodianKind, slot_ref
from swapflow.domain.swaps import SwapStatus
from swapflow.ops.invariants import InvariantReport, Rule, check_invariants
from swapflow.payments.ledger import DEFERRED_REVENUE, SWAP_REVENUE, Posting, post_transaction, provider_clearing
from swapflow.payments.provider import PaymentMethod, RefundRequest, refund_key
from swapflow.payments.refunds import RefundOrigin, swap_refund_id
from swapflow.payments.registry import providers_from_settings
from swapflow.payments.sandbox import PROVIDER, SandboxProvider
from swapflow.protocol.v1 import BatteryReading
from swapflow.settings import Settings, get_settings
from swapflow.workflows.refund_contract import RefundRef, RefundStart
from swapflow.workflows.swap_contract import Admission, ChargeInput, ReturnCheck, ReturnVerdict, SwapFinish, SwapRequest
from tests.swap_harness import battery_of, new_order, set_online

CABINET = "cab-sh-001-1"  # slots 1-9 hold packs, 10-12 are empty
RIDER, OTHER_RIDER, THIRD_RIDER = "rider-sh-0001", "rider-sh-0002", "rider-sh-0003"
PRICE = 600  # of a swap in Shanghai, CNY minor units


def found(report: InvariantReport) -> set[tuple[str, str]]:
    """Each violation as (rule, subject)."""
    return {(v.rule, v.subject) for v in report.violations}


class Swaps:
    """Runs the steps of swaps at CABINET through the real activities, without a workflow."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.records = SwapRecords(db, settings)
        providers = providers_from_settings(settings, db)
        sandbox = providers[PaymentMethod.SANDBOX]
        assert isinstance(sandbox, SandboxProvider)
        self.provider = sandbox
        self.payments = PaymentActivities(db, providers, settings)
        self.refunds = RefundActivities(db, providers)

    async def admitted(self, rider: str) -> tuple[str, Admission]:
        """A new swap with its packs and slots reserved."""
        order_id = await new_order(self.db, rider, CABINET)
        return order_id, await self.records.admit(SwapRequest(order_id=order_id, rider_id=rider, cabinet_id=CABINET))

    async def paid(self, rider: str) -> tuple[str, Admission]:
        """A new swap, admitted and charged."""
        order_id, admission = await self.admitted(rider)
        await self.payments.charge(
            ChargeInput(order_id=order_id, amount_minor=admission.price_minor, currency=admission.currency)
        )
        return order_id, admission

    async def return_pack(
        self, order_id: str, rider: str, admission: Admission, *, temperature_c: float = 25.0
    ) -> ReturnVerdict:
        """The rider's pack goes into the return slot and is checked at the given temperature."""
        reading = BatteryReading(
            serial=admission.rider_battery_serial,
            soc=15.0,
            soh=90.0,
            voltage_v=56.0,
            temperature_c=temperature_c,
            cycle_count=100,
        )
        return await self.records.accept_return(
            ReturnCheck(
                order_id=order_id,
                rider_id=rider,
                cabinet_id=CABINET,
                slot_no=admission.return_slot_no,
                expected_serial=admission.rider_battery_serial,
                reading=reading,
            )
        )

    async def refund(self, order_id: str) -> None:
        """The saga's refund compensation, as its refund workflow runs it: open, submit, settle."""
        plan = await self.refunds.prepare(
            RefundStart(
                refund_id=swap_refund_id(order_id),
                order_id=order_id,
                reason="test rollback",
                origin=RefundOrigin.SWAP_COMPENSATION,
            )
        )
        assert plan is not None
        ref = RefundRef(refund_id=plan.refund_id)
        await self.refunds.submit(ref)
        await self.refunds.settle(ref)

    async def finish(self, order_id: str, status: SwapStatus) -> None:
        await self.records.finish(
            SwapFinish(
                order_id=order_id, status=status, reason=None if status == SwapStatus.COMPLETED else "test rollback"
            )
        )

    async def completed(self, rider: str) -> str:
        """A swap run to completion: charged, pack returned, charged pack issued, revenue booked."""
        order_id, admission = await self.paid(rider)
        await self.return_pack(order_id, rider, admission)
        await self.finish(order_id, SwapStatus.COMPLETED)
        return order_id

    async def refund_part(self, order_id: str, amount_minor: int, key: str) -> None:
        """Refund part of a swap's capture at the provider and in the ledger, under its own key."""
        payment = await self.provider.find_payment(charge_key(order_id))
        assert payment is not None
        await self.provider.refund(RefundRequest(key=key, payment=payment, amount_minor=amount_minor, reason="test"))
        await book(
            self.db,
            key=key,
            kind="swap_refund",
            order_id=order_id,
            postings=[Posting(DEFERRED_REVENUE, amount_minor), Posting(provider_clearing(PROVIDER), -amount_minor)],
        )


async def book(db: Database, *, key: str, kind: str, order_id: str | None, postings: list[Posting]) -> None:
    """A balanced ledger transaction in CNY, as the ledger itself posts it."""
    async with db.transaction() as session:
        await post_transaction(session, key=key, kind=kind, currency="CNY", order_id=order_id, postings=postings)


async def transfer(
    db: Database, serial: str, kind: str, ref: str, *, from_kind: str | None = None, from_ref: str | None = None
) -> None:
    """A change of custody, recorded with its event. The event starts at the current custodian unless
    `from_kind`/`from_ref` say otherwise."""
    async with db.transaction() as session:
        battery = await session.get(Battery, serial)
        assert battery is not None
        session.add(
            CustodyEvent(
                key=f"test:{uuid.uuid4().hex}",
                battery_serial=serial,
                from_kind=from_kind or battery.custodian_kind,
                from_ref=battery.custodian_ref if from_ref is None else from_ref,
                to_kind=kind,
                to_ref=ref,
                reason="test",
            )
        )
        battery.custodian_kind, battery.custodian_ref = kind, ref


async def place(db: Database, serial: str | None, slot_no: int) -> None:
    """What a slot physically holds, changed without any custody record; the pack leaves its old slot."""
    async with db.transaction() as session:
        if serial is not None:  # first, as a pack is held by one slot at most (unique)
            await session.execute(update(Slot).where(Slot.battery_serial == serial).values(battery_serial=None))
        await session.execute(
            update(Slot).where(Slot.cabinet_id == CABINET, Slot.slot_no == slot_no).values(battery_serial=serial)
        )


async def pack_in(db: Database, slot_no: int) -> str:
    """The serial of the pack a slot of CABINET holds."""
    async with db.sessions() as session:
        serial = await session.scalar(
            select(Slot.battery_serial).where(Slot.cabinet_id == CABINET, Slot.slot_no == slot_no)
        )
    assert serial is not None
    return serial


async def riders_pack(db: Database, rider: str) -> str:
    battery = await battery_of(db, rider)
    assert battery is not None
    return battery.serial


@pytest.fixture
async def swaps(db: Database, settings: Settings) -> Swaps:
    await set_online(db, CABINET, True)  # seeded offline; admission refuses offline reporting cabinets
    return Swaps(db, settings)


# ---------------------------------------------------------------------------------------------- clean


async def test_freshly_seeded_network_is_clean_and_everything_in_it_was_checked(db: Database) -> None:
    report = await check_invariants(db, stuck_after=timedelta(minutes=1))
    assert report.ok and report.violations == []
    # 4 cities x 2 stations x 12 slots (9 with packs), and 6 riders holding a pack each per city.
    assert (report.batteries, report.slots, report.custody_events) == (96, 96, 96)
    assert (report.ledger_transactions, report.ledger_postings, report.swaps) == (0, 0, 0)


async def test_completed_refunded_and_quarantining_swaps_leave_the_network_clean(swaps: Swaps, db: Database) -> None:
    await swaps.completed(RIDER)
    refunded, _ = await swaps.paid(OTHER_RIDER)
    await swaps.refund(refunded)
    await swaps.finish(refunded, SwapStatus.FAILED)
    quarantining, admission = await swaps.paid(THIRD_RIDER)
    verdict = await swaps.return_pack(quarantining, THIRD_RIDER, admission, temperature_c=80.0)
    assert verdict.quarantined  # the pack stays locked in its slot, in quarantine's custody
    await swaps.refund(quarantining)
    await swaps.finish(quarantining, SwapStatus.FAILED)

    report = await check_invariants(db, stuck_after=timedelta(minutes=1))
    assert report.violations == []
    # The completed swap's charge, revenue and partners' commissions; each refund's charge, owed, then settled.
    assert (report.swaps, report.ledger_transactions) == (3, 9)


async def test_paid_swap_in_progress_may_hold_deferred_revenue(swaps: Swaps, db: Database) -> None:
    await swaps.paid(RIDER)
    assert (await check_invariants(db, stuck_after=timedelta(hours=1))).violations == []


# ---------------------------------------------------------------------------------------------- custody


@pytest.mark.parametrize(("kind", "ref"), [("lost", RIDER), (CustodianKind.OPS, "")], ids=["unknown_kind", "empty_ref"])
async def test_battery_without_a_valid_custodian_is_reported(db: Database, kind: str, ref: str) -> None:
    serial = await riders_pack(db, RIDER)
    await transfer(db, serial, kind, ref)
    assert found(await check_invariants(db)) == {(Rule.CUSTODY_NO_CUSTODIAN, serial)}


async def test_slot_custodied_battery_that_left_its_slot_is_reported(db: Database) -> None:
    serial = await pack_in(db, 1)
    await place(db, None, 1)
    assert found(await check_invariants(db)) == {(Rule.CUSTODY_SLOT_MISMATCH, serial)}


async def test_slot_custodied_battery_held_by_another_slot_is_reported(db: Database) -> None:
    serial = await pack_in(db, 1)
    await place(db, serial, 10)
    report = await check_invariants(db)
    assert found(report) == {(Rule.CUSTODY_SLOT_MISMATCH, serial)}
    assert slot_ref(CABINET, 10) in report.violations[0].detail


async def test_slot_holding_a_riders_battery_is_reported(db: Database) -> None:
    serial = await riders_pack(db, RIDER)
    await place(db, serial, 10)
    assert found(await check_invariants(db)) == {(Rule.CUSTODY_RIDER_IN_SLOT, serial)}


async def test_slot_holding_a_battery_in_someone_elses_custody_is_reported(db: Database) -> None:
    await transfer(db, await pack_in(db, 1), CustodianKind.OPS, "van-7")  # handed over, never taken out
    assert found(await check_invariants(db)) == {(Rule.CUSTODY_SLOT_OCCUPANT, slot_ref(CABINET, 1))}


async def test_battery_quarantined_in_another_slot_is_reported(db: Database) -> None:
    await transfer(db, await pack_in(db, 1), CustodianKind.QUARANTINE, slot_ref(CABINET, 2))
    assert found(await check_invariants(db)) == {(Rule.CUSTODY_SLOT_OCCUPANT, slot_ref(CABINET, 1))}


async def reported(db: Database, slot_no: int, serial: str | None) -> None:
    """The cabinet reports `serial` (None: nothing) in the slot, as an event or a birth records it."""
    async with db.transaction() as session:
        await session.execute(
            update(Slot)
            .where(Slot.cabinet_id == CABINET, Slot.slot_no == slot_no)
            .values(reported_serial=serial, reported_at=utcnow())
        )


async def test_slot_whose_cabinet_last_reported_another_pack_than_custody_holds_is_reported(db: Database) -> None:
    await reported(db, 1, await pack_in(db, 1))  # agrees
    await reported(db, 2, None)  # the cabinet says the slot is empty: custody still has a pack there
    assert found(await check_invariants(db)) == {(Rule.CUSTODY_SLOT_REPORT_MISMATCH, slot_ref(CABINET, 2))}


async def test_slot_report_mismatch_with_an_open_discrepancy_is_left_to_the_operator(db: Database) -> None:
    await reported(db, 2, None)
    async with db.transaction() as session:
        session.add(
            CustodyDiscrepancy(
                cabinet_id=CABINET,
                slot_no=2,
                expected_serial=await pack_in(db, 2),
                reported_serial=None,
                detected_at=utcnow(),
            )
        )
    assert found(await check_invariants(db)) == set()


async def test_rider_holding_two_batteries_is_reported(db: Database) -> None:
    serial = await pack_in(db, 1)
    await place(db, None, 1)
    await transfer(db, serial, CustodianKind.RIDER, RIDER)
    assert found(await check_invariants(db)) == {(Rule.CUSTODY_RIDER_HOLDS_MANY, RIDER)}


async def test_battery_without_custody_events_is_reported(db: Database) -> None:
    serial = await riders_pack(db, RIDER)
    async with db.transaction() as session:
        await session.execute(delete(CustodyEvent).where(CustodyEvent.battery_serial == serial))
    assert found(await check_invariants(db)) == {(Rule.CUSTODY_NO_EVENTS, serial)}


async def test_custody_change_without_an_event_is_reported(db: Database) -> None:
    serial = await riders_pack(db, RIDER)
    async with db.transaction() as session:
        await session.execute(
            update(Battery)
            .where(Battery.serial == serial)
            .values(custodian_kind=CustodianKind.OPS, custodian_ref="warehouse")
        )
    assert found(await check_invariants(db)) == {(Rule.CUSTODY_LATEST_EVENT_MISMATCH, serial)}


async def test_custody_event_that_does_not_start_where_the_last_ended_is_reported(db: Database) -> None:
    serial = await riders_pack(db, RIDER)
    # Back to the same rider, from a van the battery was never recorded going to.
    await transfer(db, serial, CustodianKind.RIDER, RIDER, from_kind=CustodianKind.OPS, from_ref="van-7")
    assert found(await check_invariants(db)) == {(Rule.CUSTODY_CHAIN_GAP, serial)}


# ---------------------------------------------------------------------------------------------- ledger


async def test_unbalanced_transaction_is_reported(db: Database) -> None:
    async with db.transaction() as session:
        result = await session.execute(insert(LedgerTransaction).values(key="manual:1", kind="adjustment", memo=""))
        transaction_id = result.inserted_primary_key[0]
        await session.execute(
            insert(LedgerPosting),
            [
                {"transaction_id": transaction_id, "account": "cash", "amount_minor": 100, "currency": "CNY"},
                {"transaction_id": transaction_id, "account": SWAP_REVENUE, "amount_minor": -90, "currency": "CNY"},
            ],
        )
    assert found(await check_invariants(db)) == {(Rule.LEDGER_UNBALANCED, "manual:1")}


async def test_transaction_with_a_single_posting_is_reported(db: Database) -> None:
    await book(db, key="manual:1", kind="adjustment", order_id=None, postings=[Posting("cash", 0)])
    assert found(await check_invariants(db)) == {(Rule.LEDGER_TOO_FEW_POSTINGS, "manual:1")}


# ---------------------------------------------------------------------------------------------- money


async def test_swap_charged_twice_is_reported(swaps: Swaps, db: Database) -> None:
    order_id = await swaps.completed(RIDER)
    await book(
        db,
        key=f"swap:{order_id}:charge-again",
        kind="swap_charge",
        order_id=order_id,
        postings=[Posting(provider_clearing(PROVIDER), PRICE), Posting(DEFERRED_REVENUE, -PRICE)],
    )
    assert found(await check_invariants(db)) == {(Rule.MONEY_DOUBLE_CHARGE, order_id)}


async def test_completed_swap_without_a_charge_is_reported(swaps: Swaps, db: Database) -> None:
    order_id = await swaps.completed(RIDER)
    async with db.transaction() as session:  # as if the charge had never happened, at the provider either
        charge = await session.scalar(select(LedgerTransaction.id).where(LedgerTransaction.key == charge_key(order_id)))
        await session.execute(delete(LedgerPosting).where(LedgerPosting.transaction_id == charge))
        await session.execute(delete(LedgerTransaction).where(LedgerTransaction.id == charge))
        await session.execute(delete(SandboxPayment).where(SandboxPayment.idempotency_key == charge_key(order_id)))
    assert found(await check_invariants(db)) == {(Rule.MONEY_UNCHARGED_COMPLETION, order_id)}


async def test_completed_swap_without_revenue_is_reported(swaps: Swaps, db: Database) -> None:
    order_id = await swaps.completed(RIDER)
    async with db.transaction() as session:
        revenue = await session.scalar(
            select(LedgerTransaction.id).where(
                LedgerTransaction.order_id == order_id, LedgerTransaction.kind == "swap_revenue"
            )
        )
        await session.execute(delete(LedgerPosting).where(LedgerPosting.transaction_id == revenue))
        await session.execute(delete(LedgerTransaction).where(LedgerTransaction.id == revenue))
    assert found(await check_invariants(db)) == {(Rule.MONEY_REVENUE_COUNT, order_id)}


async def test_refund_of_a_completed_swap_is_reported(swaps: Swaps, db: Database) -> None:
    order_id = await swaps.completed(RIDER)
    await swaps.refund(order_id)
    assert found(await check_invariants(db)) == {(Rule.MONEY_REFUND_ON_COMPLETED, order_id)}


async def test_failed_swap_charged_and_never_refunded_is_reported(swaps: Swaps, db: Database) -> None:
    order_id, _ = await swaps.paid(RIDER)
    await swaps.finish(order_id, SwapStatus.FAILED)
    assert found(await check_invariants(db)) == {(Rule.MONEY_UNREFUNDED_FAILURE, order_id)}


async def test_failed_swap_refunded_in_two_parts_is_reported(swaps: Swaps, db: Database) -> None:
    order_id, _ = await swaps.paid(RIDER)
    await swaps.refund_part(order_id, PRICE // 2, refund_key(swap_refund_id(order_id)))
    await swaps.refund_part(order_id, PRICE // 2, f"{refund_key(swap_refund_id(order_id))}-2")
    await swaps.finish(order_id, SwapStatus.FAILED)
    assert found(await check_invariants(db)) == {(Rule.MONEY_MULTIPLE_REFUNDS, order_id)}


async def test_failed_swap_refunded_less_than_charged_is_reported(swaps: Swaps, db: Database) -> None:
    order_id, _ = await swaps.paid(RIDER)
    await swaps.refund_part(order_id, PRICE // 2, refund_key(swap_refund_id(order_id)))
    await swaps.finish(order_id, SwapStatus.FAILED)
    assert found(await check_invariants(db)) == {(Rule.MONEY_PARTIAL_REFUND, order_id)}


async def test_refund_without_a_capture_is_reported(swaps: Swaps, db: Database) -> None:
    order_id, _ = await swaps.admitted(RIDER)  # failed before the charge
    await swaps.finish(order_id, SwapStatus.FAILED)
    await book(
        db,
        key=refund_key(swap_refund_id(order_id)),
        kind="swap_refund",
        order_id=order_id,
        postings=[Posting(DEFERRED_REVENUE, PRICE), Posting(provider_clearing(PROVIDER), -PRICE)],
    )
    assert found(await check_invariants(db)) == {(Rule.MONEY_OVER_REFUND, order_id)}


async def test_refund_the_provider_never_made_is_reported(swaps: Swaps, db: Database) -> None:
    order_id, _ = await swaps.paid(RIDER)
    await book(
        db,
        key=refund_key(swap_refund_id(order_id)),
        kind="swap_refund",
        order_id=order_id,
        postings=[Posting(DEFERRED_REVENUE, PRICE), Posting(provider_clearing(PROVIDER), -PRICE)],
    )
    await swaps.finish(order_id, SwapStatus.FAILED)
    assert found(await check_invariants(db)) == {(Rule.MONEY_PROVIDER_MISMATCH, order_id)}


async def test_deferred_revenue_left_on_a_finished_swap_is_reported(swaps: Swaps, db: Database) -> None:
    order_id = await swaps.completed(RIDER)
    await book(
        db,
        key=f"adjust:{order_id}",
        kind="adjustment",
        order_id=order_id,
        postings=[Posting(SWAP_REVENUE, 10), Posting(DEFERRED_REVENUE, -10)],
    )
    assert found(await check_invariants(db)) == {(Rule.MONEY_DEFERRED_BALANCE, order_id)}


# ---------------------------------------------------------------------------------------------- swaps


async def test_swap_in_progress_longer_than_stuck_after_is_reported(db: Database) -> None:
    stale = await new_order(db, RIDER, CABINET)
    await new_order(db, OTHER_RIDER, CABINET)  # just started: not stuck
    async with db.transaction() as session:
        await session.execute(
            update(SwapOrder).where(SwapOrder.id == stale).values(created_at=utcnow() - timedelta(hours=2))
        )
    assert found(await check_invariants(db, stuck_after=timedelta(minutes=30))) == {(Rule.SWAP_STUCK, stale)}


async def test_no_swap_is_stuck_without_stuck_after(db: Database) -> None:
    stale = await new_order(db, RIDER, CABINET)
    async with db.transaction() as session:
        await session.execute(
            update(SwapOrder).where(SwapOrder.id == stale).values(created_at=utcnow() - timedelta(days=2))
        )
    assert (await check_invariants(db)).violations == []


async def test_completed_swap_without_its_batteries_is_reported(swaps: Swaps, db: Database) -> None:
    order_id = await swaps.completed(RIDER)
    async with db.transaction() as session:
        await session.execute(update(SwapOrder).where(SwapOrder.id == order_id).values(issued_battery_serial=None))
    assert found(await check_invariants(db)) == {(Rule.SWAP_MISSING_BATTERIES, order_id)}


async def test_slot_reserved_by_a_finished_swap_is_reported(swaps: Swaps, db: Database) -> None:
    order_id = await swaps.completed(RIDER)
    async with db.transaction() as session:
        await session.execute(
            update(Slot).where(Slot.cabinet_id == CABINET, Slot.slot_no == 12).values(reserved_order_id=order_id)
        )
    assert found(await check_invariants(db)) == {(Rule.SWAP_STALE_RESERVATION, slot_ref(CABINET, 12))}


# ---------------------------------------------------------------------------------------------- CLI


@pytest.fixture
def configured(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The seeded database as the one `swapflow` commands use; returns its URL."""
    monkeypatch.setenv("SWAPFLOW_DATABASE_URL", database_url)
    get_settings.cache_clear()
    yield database_url
    get_settings.cache_clear()


def test_check_command_exits_0_when_every_invariant_holds(configured: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check"]) == 0
    assert "all invariants hold" in capsys.readouterr().out


def test_check_command_exits_1_and_prints_each_violation(configured: str, capsys: pytest.CaptureFixture[str]) -> None:
    engine = create_sync_engine(configured)
    with engine.begin() as conn:
        serial = conn.scalar(select(Slot.battery_serial).where(Slot.cabinet_id == CABINET, Slot.slot_no == 1))
        conn.execute(update(Slot).where(Slot.cabinet_id == CABINET, Slot.slot_no == 1).values(battery_serial=None))
    engine.dispose()
    assert main(["check"]) == 1
    assert f"{Rule.CUSTODY_SLOT_MISMATCH} {serial}:" in capsys.readouterr().out


def test_check_command_reports_stuck_swaps_past_stuck_after_minutes(configured: str) -> None:
    engine = create_sync_engine(configured)
    with engine.begin() as conn:
        conn.execute(
            insert(SwapOrder).values(
                id="stale",
                rider_id=RIDER,
                cabinet_id=CABINET,
                idempotency_key="k",
                status=SwapStatus.IN_PROGRESS,
                stage="created",
                steps=[],
                created_at=utcnow() - timedelta(hours=1),
                updated_at=utcnow(),
            )
        )
    engine.dispose()
    assert main(["check"]) == 0
    assert main(["check", "--stuck-after-minutes", "30"]) == 1


# ---------------------------------------------------------------------------------------------- refunds


async def failed_and_refunded(swaps: Swaps) -> str:
    order_id, _ = await swaps.paid(RIDER)
    await swaps.refund(order_id)
    await swaps.finish(order_id, SwapStatus.FAILED)
    return order_id


async def extra_refund(
    db: Database,
    order_id: str,
    refund_id: str,
    *,
    origin: str,
    status: str = "processing",
    expected_by: datetime | None = None,
) -> None:
    """A refund row of the swap's payment, written directly (as no code path may)."""
    async with db.transaction() as session:
        session.add(
            Refund(
                id=refund_id,
                key=refund_key(refund_id),
                payment_key=charge_key(order_id),
                order_id=order_id,
                rider_id=RIDER,
                method="sandbox",
                amount_minor=PRICE,
                currency="CNY",
                reason="test",
                origin=origin,
                status=status,
                attempt=1,
                escalated=False,
                expected_by=expected_by,
            )
        )


async def test_refunds_beyond_the_capture_are_reported(swaps: Swaps, db: Database) -> None:
    order_id = await failed_and_refunded(swaps)
    await extra_refund(db, order_id, "op-1", origin="operator", status="requested")
    assert found(await check_invariants(db)) == {(Rule.MONEY_REFUNDS_EXCEED_CAPTURE, charge_key(order_id))}


async def test_second_compensation_refund_for_one_failure_is_reported(swaps: Swaps, db: Database) -> None:
    order_id = await failed_and_refunded(swaps)
    await extra_refund(db, order_id, f"again-{order_id}", origin="swap_compensation", status="requested")
    assert (Rule.MONEY_DUPLICATE_SWAP_REFUND, order_id) in found(await check_invariants(db))


async def test_refund_still_processing_past_its_expected_time_is_reported(swaps: Swaps, db: Database) -> None:
    order_id = await failed_and_refunded(swaps)
    refund_id = swap_refund_id(order_id)
    async with db.transaction() as session:
        await session.execute(
            update(Refund)
            .where(Refund.id == refund_id)
            .values(status="processing", expected_by=utcnow() - timedelta(hours=1))
        )
    assert found(await check_invariants(db)) == {(Rule.REFUND_OVERDUE, refund_id)}


async def test_succeeded_refund_never_settled_in_the_ledger_is_reported(swaps: Swaps, db: Database) -> None:
    order_id = await failed_and_refunded(swaps)
    refund_id = swap_refund_id(order_id)
    async with db.transaction() as session:
        settled = await session.scalar(
            select(LedgerTransaction.id).where(LedgerTransaction.key == f"refund:{refund_id}:settled")
        )
        await session.execute(delete(LedgerPosting).where(LedgerPosting.transaction_id == settled))
        await session.execute(delete(LedgerTransaction).where(LedgerTransaction.id == settled))
    assert found(await check_invariants(db)) == {(Rule.REFUND_UNSETTLED, refund_id)}
