"""The swap workflow on the time-skipping server, with the real activities against a real database and
broker. Cabinets are simulated MQTT clients; their messages reach the workflow through the real
device adapter."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from swapflow.db.models import (
    Battery,
    CustodianKind,
    LedgerPosting,
    LedgerTransaction,
    SandboxPayment,
    Slot,
    SwapOrder,
    SwapStage,
    SwapStatus,
)
from swapflow.settings import Settings
from swapflow.simulator.battery import SimBattery
from swapflow.simulator.cabinet import SimulatedCabinet
from swapflow.simulator.fleet import sim_battery as sim_battery_of
from swapflow.workflows.models import SwapRequest, swap_workflow_id
from swapflow.workflows.swap import SwapWorkflow
from tests.swap_harness import battery_of, new_order, running_cabinet, running_worker, set_online

CABINET = "cab-sh-001-1"
RIDER = "rider-sh-0001"


async def run_swap(temporal_env, settings: Settings, order_id: str):
    request = SwapRequest(order_id=order_id, rider_id=RIDER, cabinet_id=CABINET,
                          command_ack_timeout_s=settings.command_ack_timeout_s,
                          return_insert_timeout_s=settings.return_insert_timeout_s,
                          charged_take_timeout_s=settings.charged_take_timeout_s,
                          offline_grace_s=settings.offline_grace_s)
    return await temporal_env.client.execute_workflow(
        SwapWorkflow.run, request, id=swap_workflow_id(order_id), task_queue=settings.temporal_task_queue)


async def test_offline_cabinet_is_rejected_before_any_money_moves(temporal_env, settings, db):
    await set_online(db, CABINET, False)
    order_id = await new_order(db, RIDER, CABINET)
    async with running_worker(temporal_env.client, settings, db):
        result = await run_swap(temporal_env, settings, order_id)
    assert result.status == SwapStatus.FAILED and result.failure_reason == "cabinet_offline"
    async with db.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(SandboxPayment)) == 0
        assert await session.scalar(select(func.count()).select_from(LedgerTransaction)) == 0


async def test_cabinet_that_never_acknowledges_refunds_the_rider_and_releases_the_slots(temporal_env, settings, db):
    await set_online(db, CABINET, True)  # online in the database, but nobody answers its commands
    order_id = await new_order(db, RIDER, CABINET)
    async with running_worker(temporal_env.client, settings, db):
        result = await run_swap(temporal_env, settings, order_id)
    assert result.status == SwapStatus.FAILED
    assert result.failure_reason == "no_working_return_slot"  # every free slot was tried
    async with db.sessions() as session:
        order = await session.get(SwapOrder, order_id)
        assert order is not None and order.stage == SwapStage.FAILED
        assert order.payment_ref and order.refund_ref
        payment = await session.scalar(select(SandboxPayment))
        assert payment is not None and payment.refunded_minor == payment.amount_minor == order.price_minor
        balances = dict((await session.execute(
            select(LedgerPosting.account, func.sum(LedgerPosting.amount_minor)).group_by(LedgerPosting.account)
        )).tuples().all())
        assert balances == {"provider_clearing:sandbox": 0, "deferred_revenue:swaps": 0}
        assert await session.scalar(select(func.count()).select_from(Slot).where(
            Slot.reserved_order_id == order_id)) == 0


async def rider_at_the_doors(cabinet: SimulatedCabinet, held: SimBattery, slot_of: dict[str, int]) -> SimBattery:
    """What the rider does: put the flat pack in when its door opens, take the charged one when its opens."""
    while not (slot_of and cabinet.door_open(slot_of["return"])):
        await asyncio.sleep(0.02)
    await cabinet.insert_battery(slot_of["return"], held)
    while not cabinet.door_open(slot_of["charged"]):
        await asyncio.sleep(0.02)
    return await cabinet.take_battery(slot_of["charged"])


async def test_happy_path_swaps_the_packs_and_books_the_revenue(temporal_env, settings, db):
    order_id = await new_order(db, RIDER, CABINET)
    held = await battery_of(db, RIDER)
    assert held is not None
    async with running_worker(temporal_env.client, settings, db), \
            running_cabinet(temporal_env.client, settings, db, CABINET) as cabinet:
        slot_of: dict[str, int] = {}

        async def follow_order() -> None:
            while not slot_of:
                async with db.sessions() as session:
                    order = await session.get(SwapOrder, order_id)
                    if order is not None and order.return_slot_no and order.charged_slot_no:
                        slot_of.update({"return": order.return_slot_no, "charged": order.charged_slot_no})
                await asyncio.sleep(0.05)

        # Device waits are real: the cabinet and rider act in real time, not in skipped time.
        with temporal_env.auto_time_skipping_disabled():
            swap = asyncio.create_task(run_swap(temporal_env, settings, order_id))
            await follow_order()
            taken = await rider_at_the_doors(cabinet, sim_battery_of(held), slot_of)
            result = await swap
    assert result.status == SwapStatus.COMPLETED, result
    async with db.sessions() as session:
        order = await session.get(SwapOrder, order_id)
        assert order is not None and order.stage == SwapStage.COMPLETED
        assert order.returned_battery_serial == held.serial and order.issued_battery_serial == taken.serial
        issued = await session.get(Battery, taken.serial)
        assert issued is not None and (issued.custodian_kind, issued.custodian_ref) == (CustodianKind.RIDER, RIDER)
        kinds = (await session.scalars(select(LedgerTransaction.kind).where(
            LedgerTransaction.order_id == order_id).order_by(LedgerTransaction.id))).all()
        assert kinds == ["swap_charge", "swap_revenue"]
