"""The swap workflow on the time-skipping server with the real activities against a real database and
broker, where no cabinet answers: time is skipped past every wait. The branches with a simulated
cabinet, the happy path first, are in test_swap_saga.py."""

from __future__ import annotations

from sqlalchemy import func, select

from swapflow.db.money import LedgerPosting, LedgerTransaction, SandboxPayment
from swapflow.db.network import Slot
from swapflow.db.swaps import SwapOrder
from swapflow.domain.swaps import SwapStage, SwapStatus
from swapflow.services.swaps import swap_request
from swapflow.settings import Settings
from swapflow.workflows.swap import SwapWorkflow
from swapflow.workflows.swap_contract import swap_workflow_id
from tests.swap_harness import new_order, running_worker, set_online, swap_refund_outcome

CABINET = "cab-sh-001-1"
RIDER = "rider-sh-0001"


async def run_swap(temporal_env, settings: Settings, order_id: str):
    request = swap_request(settings, order_id=order_id, rider_id=RIDER, cabinet_id=CABINET)
    return await temporal_env.client.execute_workflow(
        SwapWorkflow.run, request, id=swap_workflow_id(order_id), task_queue=settings.temporal.task_queue
    )


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
        refund = await swap_refund_outcome(temporal_env.client, order_id)
    assert result.status == SwapStatus.FAILED
    assert result.failure_reason == "no_working_return_slot"  # every free slot was tried
    assert refund.state == "succeeded"
    async with db.sessions() as session:
        order = await session.get(SwapOrder, order_id)
        assert order is not None and order.stage == SwapStage.FAILED
        assert order.payment_ref and order.refund_ref
        payment = await session.scalar(select(SandboxPayment))
        assert payment is not None and payment.refunded_minor == payment.amount_minor == order.price_minor
        balances = dict(
            (
                await session.execute(
                    select(LedgerPosting.account, func.sum(LedgerPosting.amount_minor)).group_by(LedgerPosting.account)
                )
            )
            .tuples()
            .all()
        )
        assert balances == {"provider_clearing:sandbox": 0, "deferred_revenue:swaps": 0, "refunds_payable": 0}
        assert (
            await session.scalar(select(func.count()).select_from(Slot).where(Slot.reserved_order_id == order_id)) == 0
        )
