"""Every way a swap can fail ends well: one test per branch of the swap saga, on the time-skipping
server with the real worker, the real device adapter, a simulated cabinet on a real broker and a
real database. Each asserts the swap's end state, the custody records and the ledger, and that the
whole database still keeps the brief's invariants."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from swapflow.db.devices import DeviceCommand
from swapflow.db.engine import Database
from swapflow.db.money import LedgerTransaction, SandboxPayment
from swapflow.db.network import Battery, Rider, Slot
from swapflow.db.ops import Alert
from swapflow.db.swaps import SafetyEvent, SwapOrder
from swapflow.domain.network import BatteryStatus, CustodianKind
from swapflow.domain.swaps import RiderStatus, SwapStage, SwapStatus
from swapflow.ops.invariants import check_invariants
from swapflow.payments.refunds import swap_refund_id
from swapflow.services.swaps import swap_request
from swapflow.settings import Settings
from swapflow.simulator.battery import SimBattery
from swapflow.simulator.cabinet import SimulatedCabinet
from swapflow.simulator.fleet import sim_battery
from swapflow.workflows.device_contract import DEVICE_SIGNAL, DeviceSignal, DeviceSignalKind
from swapflow.workflows.refund_contract import refund_workflow_id
from swapflow.workflows.swap import SwapWorkflow
from swapflow.workflows.swap_contract import swap_workflow_id
from tests.history_recording import RecordHistory
from tests.swap_harness import battery_of, new_order, running_cabinet, running_worker, swap_refund_outcome

CABINET = "cab-sh-001-1"
RIDER = "rider-sh-0001"
OTHER_RIDER = "rider-sh-0002"
EMPTY_SLOTS = (10, 11, 12)  # the seed leaves the last three slots of each cabinet empty


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Short bounds: device waits run in real time in these tests (the cabinet is real)."""
    return settings.updated(
        swap={
            "command_ack_timeout_s": 1.5,
            "return_insert_timeout_s": 20.0,
            "charged_take_timeout_s": 20.0,
            "offline_grace_s": 20.0,
        }
    )


@dataclass
class Scene:
    env: WorkflowEnvironment
    settings: Settings
    db: Database
    cabinet: SimulatedCabinet

    async def start(self, rider_id: str = RIDER) -> tuple[str, WorkflowHandle[SwapWorkflow, object]]:
        order_id = await new_order(self.db, rider_id, CABINET)
        request = swap_request(self.settings, order_id=order_id, rider_id=rider_id, cabinet_id=CABINET)
        handle = await self.env.client.start_workflow(
            SwapWorkflow.run, request, id=swap_workflow_id(order_id), task_queue=self.settings.temporal.task_queue
        )
        return order_id, handle

    async def order(self, order_id: str) -> SwapOrder:
        async with self.db.sessions() as session:
            order = await session.get(SwapOrder, order_id)
        assert order is not None
        return order

    async def until_stage(self, order_id: str, *stages: SwapStage, timeout_s: float = 15) -> SwapOrder:
        """The order once it reaches one of `stages` (or has failed)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            order = await self.order(order_id)
            if order.stage in stages or order.status == SwapStatus.FAILED:
                return order
            assert asyncio.get_running_loop().time() < deadline, f"stuck at {order.stage}"
            await asyncio.sleep(0.05)

    async def insert(self, order_id: str, battery: SimBattery) -> SwapOrder:
        order = await self.until_stage(order_id, SwapStage.RETURN_DOOR_OPEN)
        assert order.return_slot_no is not None, order.failure_reason
        await self.door_physically_open(order.return_slot_no)
        await self.cabinet.insert_battery(order.return_slot_no, battery)
        return order

    async def take(self, order_id: str) -> SimBattery:
        order = await self.until_stage(order_id, SwapStage.CHARGED_DOOR_OPEN)
        assert order.charged_slot_no is not None, order.failure_reason
        await self.door_physically_open(order.charged_slot_no)
        return await self.cabinet.take_battery(order.charged_slot_no)

    async def door_physically_open(self, slot_no: int, timeout_s: float = 15) -> None:
        """Wait, as a rider would, until the door really swings open: at a command-only cabinet the
        order moves on once the command is sent, before the cabinet has received it."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not self.cabinet.door_open(slot_no):
            assert asyncio.get_running_loop().time() < deadline, f"door {slot_no} never opened"
            await asyncio.sleep(0.02)

    async def rider_pack(self, rider_id: str = RIDER) -> SimBattery:
        held = await battery_of(self.db, rider_id)
        assert held is not None
        return sim_battery(held)

    async def skip(self, seconds: float) -> None:
        """Let `seconds` of workflow time pass at once (timers fire; the cabinet lives in real time)."""
        await self.env.sleep(timedelta(seconds=seconds))


@pytest.fixture
async def scene(temporal_env: WorkflowEnvironment, settings: Settings, db: Database) -> AsyncIterator[Scene]:
    async with (
        running_worker(temporal_env.client, settings, db),
        running_cabinet(temporal_env.client, settings, db, CABINET) as cabinet,
    ):
        # Device waits are real: time moves only as the cabinet does, or when a test skips it.
        with temporal_env.auto_time_skipping_disabled():
            yield Scene(temporal_env, settings, db, cabinet)


async def count(db: Database, model: type, *where: object) -> int:
    async with db.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def ledger_kinds(db: Database, order_id: str) -> list[str]:
    async with db.sessions() as session:
        return list(
            (
                await session.scalars(
                    select(LedgerTransaction.kind)
                    .where(LedgerTransaction.order_id == order_id)
                    .order_by(LedgerTransaction.id)
                )
            ).all()
        )


async def battery(db: Database, serial: str) -> Battery:
    async with db.sessions() as session:
        row = await session.get(Battery, serial)
    assert row is not None
    return row


async def slot(db: Database, slot_no: int) -> Slot:
    async with db.sessions() as session:
        row = await session.scalar(select(Slot).where(Slot.cabinet_id == CABINET, Slot.slot_no == slot_no))
    assert row is not None
    return row


async def assert_invariants(db: Database) -> None:
    report = await check_invariants(db)
    assert report.ok, report.violations


async def assert_refunded_once(db: Database, order_id: str, client: Client) -> None:
    """The swap's refund workflow ran to the end: owed, then settled, once; the provider agrees."""
    outcome = await swap_refund_outcome(client, order_id)
    assert outcome.state == "succeeded"
    assert await ledger_kinds(db, order_id) == ["swap_charge", "swap_refund", "refund_settled"]
    async with db.sessions() as session:
        payment = await session.scalar(
            select(SandboxPayment).where(SandboxPayment.idempotency_key == f"swap:{order_id}:charge")
        )
    assert payment is not None and payment.refunded_minor == payment.amount_minor


# ----------------------------------------------------------------------------------------- happy path


@pytest.mark.records_history
async def test_happy_path_swaps_the_packs_and_books_the_revenue(scene: Scene, record_history: RecordHistory) -> None:
    order_id, handle = await scene.start()
    held = await scene.rider_pack()
    await scene.insert(order_id, held)
    taken = await scene.take(order_id)
    result = await handle.result()
    await record_history(handle.id, "swap_completed")
    assert result.status == SwapStatus.COMPLETED, result
    order = await scene.order(order_id)
    assert order.stage == SwapStage.COMPLETED
    assert order.returned_battery_serial == held.serial and order.issued_battery_serial == taken.serial
    issued = await battery(scene.db, taken.serial)
    assert (issued.custodian_kind, issued.custodian_ref) == (CustodianKind.RIDER, RIDER)
    assert await ledger_kinds(scene.db, order_id) == ["swap_charge", "swap_revenue", "commission_accrual"]
    await assert_invariants(scene.db)


# ----------------------------------------------------------------------------------------- at scan


async def test_rider_not_eligible_is_rejected_before_any_money_moves(scene: Scene) -> None:
    async with scene.db.transaction() as session:
        await session.execute(update(Rider).where(Rider.id == RIDER).values(status=RiderStatus.SUSPENDED))
    order_id, handle = await scene.start()
    result = await handle.result()
    assert (result.status, result.failure_reason) == (SwapStatus.FAILED, "rider_not_eligible")
    assert await ledger_kinds(scene.db, order_id) == []
    assert await count(scene.db, DeviceCommand) == 0
    await assert_invariants(scene.db)


async def test_two_riders_racing_for_the_last_charged_pack_exactly_one_wins(scene: Scene) -> None:
    async with scene.db.transaction() as session:  # leave one ready pack: the others are flat
        serials = (
            await session.scalars(
                select(Slot.battery_serial)
                .where(Slot.cabinet_id == CABINET, Slot.battery_serial.is_not(None))
                .order_by(Slot.slot_no)
            )
        ).all()
        await session.execute(update(Battery).where(Battery.serial.in_(serials[1:])).values(soc=20.0))
    (first, first_handle), (second, second_handle) = await asyncio.gather(scene.start(RIDER), scene.start(OTHER_RIDER))
    loser = await scene.until_stage(second, SwapStage.RETURN_DOOR_OPEN)
    winner_id, loser_handle = (first, second_handle) if loser.status == SwapStatus.FAILED else (second, first_handle)
    lost = await loser_handle.result()
    assert lost.failure_reason == "no_charged_battery"
    assert await ledger_kinds(scene.db, lost.order_id) == []
    winner = await scene.until_stage(winner_id, SwapStage.RETURN_DOOR_OPEN)
    assert winner.status == SwapStatus.IN_PROGRESS and winner.charged_slot_no == 1
    await (first_handle if winner_id == first else second_handle).cancel()


# ----------------------------------------------------------------------------------------- payment


@pytest.mark.records_history
async def test_declined_payment_opens_no_door(scene: Scene, record_history: RecordHistory) -> None:
    # A worker of its own, whose sandbox provider declines every charge.
    declining = scene.settings.updated(
        payments={"sandbox_decline_rate": 1.0},
        temporal={"task_queue": scene.settings.temporal.task_queue + "-declines"},
    )
    async with running_worker(scene.env.client, declining, scene.db):
        order_id = await new_order(scene.db, RIDER, CABINET)
        result = await scene.env.client.execute_workflow(
            SwapWorkflow.run,
            swap_request(declining, order_id=order_id, rider_id=RIDER, cabinet_id=CABINET),
            id=swap_workflow_id(order_id),
            task_queue=declining.temporal.task_queue,
        )
    await record_history(swap_workflow_id(order_id), "swap_payment_declined")
    assert (result.status, result.failure_reason) == (SwapStatus.FAILED, "payment_declined")
    assert await count(scene.db, DeviceCommand) == 0
    assert await ledger_kinds(scene.db, order_id) == []
    await assert_invariants(scene.db)


async def test_charge_whose_answer_is_lost_is_resolved_by_asking_the_provider_and_taken_once(
    temporal_env: WorkflowEnvironment, settings: Settings, db: Database
) -> None:
    lossy = settings.updated(payments={"sandbox_timeout_rate": 1.0})
    async with (
        running_worker(temporal_env.client, lossy, db),
        running_cabinet(temporal_env.client, lossy, db, CABINET) as cabinet,
    ):
        with temporal_env.auto_time_skipping_disabled():
            scene = Scene(temporal_env, lossy, db, cabinet)
            order_id, handle = await scene.start()
            await scene.insert(order_id, await scene.rider_pack())
            await scene.take(order_id)
            result = await handle.result()
    assert result.status == SwapStatus.COMPLETED
    assert await count(db, SandboxPayment) == 1
    assert await ledger_kinds(db, order_id) == ["swap_charge", "swap_revenue", "commission_accrual"]
    await assert_invariants(db)


# ----------------------------------------------------------------------------------------- return door


async def test_jammed_return_door_moves_the_swap_to_another_slot(scene: Scene) -> None:
    scene.cabinet.jammed_slots.add(EMPTY_SLOTS[0])
    order_id, handle = await scene.start()
    order = await scene.insert(order_id, await scene.rider_pack())
    assert order.return_slot_no == EMPTY_SLOTS[1]
    await scene.take(order_id)
    assert (await handle.result()).status == SwapStatus.COMPLETED
    assert (await slot(scene.db, EMPTY_SLOTS[0])).out_of_service == "open_door_not_acknowledged"
    assert await count(scene.db, Alert, Alert.kind == "door_fault", Alert.slot_no == EMPTY_SLOTS[0]) == 1
    await assert_invariants(scene.db)


@pytest.mark.records_history
async def test_no_return_door_opening_refunds_and_records_each_fault(
    scene: Scene, record_history: RecordHistory
) -> None:
    scene.cabinet.jammed_slots.update(EMPTY_SLOTS)
    order_id, handle = await scene.start()
    held = await battery_of(scene.db, RIDER)
    result = await handle.result()
    assert (result.status, result.failure_reason) == (SwapStatus.FAILED, "no_working_return_slot")
    await assert_refunded_once(scene.db, order_id, scene.env.client)
    await record_history(handle.id, "swap_door_no_ack_refunded")
    assert await count(scene.db, Alert, Alert.kind == "door_fault") == len(EMPTY_SLOTS)
    assert held is not None and (await battery(scene.db, held.serial)).custodian_ref == RIDER
    await assert_invariants(scene.db)


@pytest.mark.records_history
async def test_rider_who_never_inserts_gets_the_door_closed_a_refund_and_keeps_the_pack(
    scene: Scene, record_history: RecordHistory
) -> None:
    order_id, handle = await scene.start()
    held = await battery_of(scene.db, RIDER)
    order = await scene.until_stage(order_id, SwapStage.RETURN_DOOR_OPEN)
    await scene.skip(scene.settings.swap.return_insert_timeout_s + 1)
    result = await handle.result()
    assert (result.status, result.failure_reason) == (SwapStatus.FAILED, "battery_not_returned_in_time")
    assert order.return_slot_no is not None and not scene.cabinet.door_open(order.return_slot_no)
    await assert_refunded_once(scene.db, order_id, scene.env.client)
    await record_history(handle.id, "swap_walk_away_refunded")
    await record_history(refund_workflow_id(swap_refund_id(order_id)), "refund_of_a_failed_swap")
    assert held is not None and (await battery(scene.db, held.serial)).custodian_ref == RIDER
    assert await count(scene.db, Slot, Slot.reserved_order_id == order_id) == 0
    await assert_invariants(scene.db)


# ----------------------------------------------------------------------------------------- returned pack


async def test_pack_that_is_not_ours_is_held_in_a_locked_slot_and_the_swap_refunded(scene: Scene) -> None:
    order_id, handle = await scene.start()
    order = await scene.insert(order_id, SimBattery("FAKE-0001", soc=20.0))
    result = await handle.result()
    assert (result.status, result.failure_reason) == (SwapStatus.FAILED, "returned_battery_not_registered")
    await assert_refunded_once(scene.db, order_id, scene.env.client)
    assert order.return_slot_no is not None
    locked = await slot(scene.db, order.return_slot_no)
    assert locked.locked and locked.out_of_service == "returned_battery_not_registered"
    async with scene.db.sessions() as session:
        event = await session.scalar(select(SafetyEvent).where(SafetyEvent.order_id == order_id))
    assert event is not None and event.verdict == "rejected" and event.battery_serial == "FAKE-0001"
    assert await count(scene.db, Alert, Alert.kind == "battery_quarantined") == 1
    await assert_invariants(scene.db)


async def test_pack_of_another_rider_is_quarantined_and_the_mismatch_recorded(scene: Scene) -> None:
    order_id, handle = await scene.start()
    foreign = await scene.rider_pack(OTHER_RIDER)
    await scene.insert(order_id, foreign)
    result = await handle.result()
    assert result.failure_reason == "returned_battery_not_riders"
    pack = await battery(scene.db, foreign.serial)
    assert (pack.custodian_kind, pack.status) == (CustodianKind.QUARANTINE, BatteryStatus.QUARANTINED)
    await assert_refunded_once(scene.db, order_id, scene.env.client)
    await assert_invariants(scene.db)


async def test_hot_pack_fails_the_safety_check_and_never_joins_the_ready_pool(scene: Scene) -> None:
    order_id, handle = await scene.start()
    hot = await scene.rider_pack()
    hot.temperature_c = 70.0
    order = await scene.insert(order_id, hot)
    result = await handle.result()
    assert result.status == SwapStatus.FAILED
    async with scene.db.sessions() as session:
        event = await session.scalar(select(SafetyEvent).where(SafetyEvent.order_id == order_id))
    assert event is not None and any("temperature" in reason for reason in event.reasons)
    assert event.reading["temperature_c"] == 70.0 and event.limits is not None
    assert order.return_slot_no is not None and (await slot(scene.db, order.return_slot_no)).locked
    assert (await battery(scene.db, hot.serial)).custodian_kind == CustodianKind.QUARANTINE
    await assert_refunded_once(scene.db, order_id, scene.env.client)
    await assert_invariants(scene.db)


# ----------------------------------------------------------------------------------------- charged pack


async def test_jammed_charged_door_gives_the_rider_another_charged_pack(scene: Scene) -> None:
    order_id, handle = await scene.start()
    order = await scene.until_stage(order_id, SwapStage.RETURN_DOOR_OPEN)
    assert order.charged_slot_no is not None
    scene.cabinet.jammed_slots.add(order.charged_slot_no)
    await scene.insert(order_id, await scene.rider_pack())
    taken = await scene.take(order_id)
    result = await handle.result()
    assert result.status == SwapStatus.COMPLETED
    final = await scene.order(order_id)
    assert final.charged_slot_no != order.charged_slot_no and final.issued_battery_serial == taken.serial
    assert (await battery(scene.db, taken.serial)).custodian_ref == RIDER
    await assert_invariants(scene.db)


async def test_no_charged_door_opening_keeps_the_return_and_refunds(scene: Scene) -> None:
    order_id, handle = await scene.start()
    await scene.until_stage(order_id, SwapStage.RETURN_DOOR_OPEN)
    scene.cabinet.jammed_slots.update(n for n in range(1, 13) if n not in EMPTY_SLOTS)
    returned = await scene.rider_pack()
    order = await scene.insert(order_id, returned)
    result = await handle.result()
    assert (result.status, result.failure_reason) == (SwapStatus.FAILED, "no_working_charged_slot")
    pack = await battery(scene.db, returned.serial)
    assert (pack.custodian_kind, pack.custodian_ref) == (CustodianKind.SLOT, f"{CABINET}/{order.return_slot_no}")
    await assert_refunded_once(scene.db, order_id, scene.env.client)
    await assert_invariants(scene.db)


async def test_charged_pack_left_behind_stays_in_the_cabinet_behind_a_closed_door(scene: Scene) -> None:
    order_id, handle = await scene.start()
    await scene.insert(order_id, await scene.rider_pack())
    order = await scene.until_stage(order_id, SwapStage.CHARGED_DOOR_OPEN)
    await scene.skip(scene.settings.swap.charged_take_timeout_s + 1)
    result = await handle.result()
    assert (result.status, result.failure_reason) == (SwapStatus.FAILED, "charged_battery_not_taken")
    assert order.charged_slot_no is not None and not scene.cabinet.door_open(order.charged_slot_no)
    assert order.issued_battery_serial is not None
    left = await battery(scene.db, order.issued_battery_serial)
    assert (left.custodian_kind, left.custodian_ref) == (CustodianKind.SLOT, f"{CABINET}/{order.charged_slot_no}")
    await assert_refunded_once(scene.db, order_id, scene.env.client)
    await assert_invariants(scene.db)


# ----------------------------------------------------------------------------------------- the cabinet


async def test_cabinet_that_drops_offline_mid_swap_is_waited_for_and_the_swap_resumes(scene: Scene) -> None:
    order_id, handle = await scene.start()
    await scene.until_stage(order_id, SwapStage.RETURN_DOOR_OPEN)
    scene.cabinet.cut_network()
    await asyncio.sleep(1.0)  # the broker publishes the last-will; the swap hears the cabinet is gone
    scene.cabinet.restore_network()
    await scene.insert(order_id, await scene.rider_pack())
    await scene.take(order_id)
    result = await handle.result()
    assert result.status == SwapStatus.COMPLETED
    steps = [(s.step, s.outcome) for s in result.steps]
    assert ("cabinet", "offline") in steps and ("cabinet", "online") in steps
    await assert_invariants(scene.db)


async def test_cabinet_offline_past_the_grace_rolls_the_swap_back(scene: Scene) -> None:
    order_id, handle = await scene.start()
    await scene.until_stage(order_id, SwapStage.RETURN_DOOR_OPEN)
    scene.cabinet.cut_network()
    await asyncio.sleep(1.0)
    await scene.skip(scene.settings.swap.offline_grace_s + 1)
    result = await handle.result()
    assert (result.status, result.failure_reason) == (SwapStatus.FAILED, "cabinet_offline_mid_swap")
    await assert_refunded_once(scene.db, order_id, scene.env.client)
    assert await count(scene.db, Alert, Alert.kind == "cabinet_offline_mid_swap") == 1
    scene.cabinet.restore_network()
    await assert_invariants(scene.db)


# ----------------------------------------------------------------------------------------- messages


async def test_duplicated_events_change_nothing(scene: Scene) -> None:
    scene.cabinet.duplicate_events = True
    order_id, handle = await scene.start()
    await scene.insert(order_id, await scene.rider_pack())
    await scene.take(order_id)
    result = await handle.result()
    assert result.status == SwapStatus.COMPLETED
    assert await ledger_kinds(scene.db, order_id) == ["swap_charge", "swap_revenue", "commission_accrual"]
    await assert_invariants(scene.db)


async def test_door_closed_before_the_door_was_even_opened_is_not_taken_for_a_return(scene: Scene) -> None:
    order_id, handle = await scene.start()
    order = await scene.until_stage(order_id, SwapStage.RETURN_DOOR_OPEN)
    early = DeviceSignal(
        message_id="early-close",
        kind=DeviceSignalKind.DOOR_CLOSED,
        cabinet_id=CABINET,
        at=order.created_at,
        slot_no=order.return_slot_no,
    )
    await handle.signal(DEVICE_SIGNAL, early)
    await handle.signal(DEVICE_SIGNAL, early)
    await asyncio.sleep(0.5)
    assert (await scene.order(order_id)).stage == SwapStage.RETURN_DOOR_OPEN  # still waiting for the pack
    await scene.insert(order_id, await scene.rider_pack())
    await scene.take(order_id)
    assert (await handle.result()).status == SwapStatus.COMPLETED
    await assert_invariants(scene.db)


async def test_lost_ack_is_recovered_by_resending_the_same_command(scene: Scene) -> None:
    scene.cabinet.drop_acks = True
    order_id, handle = await scene.start()
    while not scene.cabinet.door_open(EMPTY_SLOTS[0]):  # the door opened, its ack was lost
        await asyncio.sleep(0.02)
    scene.cabinet.drop_acks = False
    order = await scene.insert(order_id, await scene.rider_pack())
    assert order.return_slot_no == EMPTY_SLOTS[0]  # same slot: the resend's ack arrived
    await scene.take(order_id)
    assert (await handle.result()).status == SwapStatus.COMPLETED
    assert await count(scene.db, DeviceCommand, DeviceCommand.slot_no == EMPTY_SLOTS[0]) == 1
    await assert_invariants(scene.db)
