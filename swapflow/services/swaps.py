"""Swaps: opening a rider's order once per Idempotency-Key, starting its workflow (the one place that
says how a swap's workflow starts), and following it."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateStage,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from swapflow.db.engine import Database
from swapflow.db.money import Payment, Refund
from swapflow.db.network import Cabinet, Rider
from swapflow.db.swaps import SwapOrder
from swapflow.domain.clock import utcnow
from swapflow.domain.errors import NotFound
from swapflow.domain.pricing import normalise_code
from swapflow.domain.swaps import SwapStatus
from swapflow.payments.confirmation import confirmation_params, payment_record
from swapflow.payments.provider import CONFIRMED_BY_RIDER
from swapflow.payments.refunds import charge_key
from swapflow.payments.registry import payer_method
from swapflow.services.idempotency import create_once
from swapflow.services.pricing import check_coupon
from swapflow.services.temporal import TemporalConnector, connect
from swapflow.settings import Settings
from swapflow.workflows.swap import SwapWorkflow
from swapflow.workflows.swap_contract import SwapProgress, SwapRequest, swap_workflow_id

PENDING_POLL_S = 0.25
"""How often a swap's start looks whether its payment waits for the rider."""


def swap_request(
    settings: Settings, *, order_id: str, rider_id: str, cabinet_id: str, coupon_code: str | None = None
) -> SwapRequest:
    """The swap workflow's input for an order, with the bounds of its waits from the settings."""
    return SwapRequest(
        order_id=order_id,
        rider_id=rider_id,
        cabinet_id=cabinet_id,
        coupon_code=coupon_code,
        command_ack_timeout_s=settings.swap.command_ack_timeout_s,
        command_attempts=settings.swap.command_attempts,
        return_insert_timeout_s=settings.swap.return_insert_timeout_s,
        charged_take_timeout_s=settings.swap.charged_take_timeout_s,
        offline_grace_s=settings.swap.offline_grace_s,
        payment_pending_timeout_s=settings.payments.payment_pending_timeout_s,
        refund_poll_schedule_s=tuple(settings.payments.refund_poll_schedule_s),
        refund_expected_days=settings.payments.refund_expected_days,
    )


def swap_start(settings: Settings, order: SwapOrder) -> WithStartWorkflowOperation[SwapWorkflow, SwapProgress]:
    """How an order's swap workflow starts: at most once per order, the running one joined."""
    return WithStartWorkflowOperation(
        SwapWorkflow.run,
        swap_request(
            settings,
            order_id=order.id,
            rider_id=order.rider_id,
            cabinet_id=order.cabinet_id,
            coupon_code=order.coupon_code,
        ),
        id=swap_workflow_id(order.id),
        task_queue=settings.temporal.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        # A finished swap is never run again under the same id.
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
    )


async def _order_for_key(
    db: Database, *, rider_id: str, cabinet_id: str, coupon_code: str | None, key: str
) -> tuple[SwapOrder, bool]:
    """The order the rider's idempotency key names, created if new. Returns (order, created)."""
    coupon = normalise_code(coupon_code) if coupon_code else None

    async with db.transaction() as session:

        async def find() -> SwapOrder | None:
            return await session.scalar(
                select(SwapOrder).where(SwapOrder.rider_id == rider_id, SwapOrder.idempotency_key == key)
            )

        def differs(order: SwapOrder) -> str | None:
            if order.cabinet_id != cabinet_id:
                return f"Idempotency-Key {key!r} was used for a swap at cabinet {order.cabinet_id!r}"
            if order.coupon_code != coupon:
                return f"Idempotency-Key {key!r} was used for a swap with coupon {order.coupon_code!r}"
            return None

        async def create() -> SwapOrder:
            if await session.get(Rider, rider_id) is None:
                raise NotFound("rider", rider_id)
            if await session.get(Cabinet, cabinet_id) is None:
                raise NotFound("cabinet", cabinet_id)
            created_at = utcnow()  # the time the swap is priced at, here and at admission
            if coupon_code is not None:
                await check_coupon(
                    session, rider_id=rider_id, cabinet_id=cabinet_id, at=created_at, coupon_code=coupon_code
                )
            order = SwapOrder(
                id=uuid.uuid4().hex,
                rider_id=rider_id,
                cabinet_id=cabinet_id,
                idempotency_key=key,
                steps=[],
                created_at=created_at,
                coupon_code=coupon,
            )
            session.add(order)
            await session.flush()
            return order

        return await create_once(session, find=find, differs=differs, create=create)


async def create_swap(
    db: Database,
    settings: Settings,
    temporal: TemporalConnector,
    *,
    rider_id: str,
    cabinet_id: str,
    coupon_code: str | None,
    idempotency_key: str,
) -> tuple[SwapOrder, bool]:
    """Open the rider's swap under `idempotency_key` (the same key answers the same swap) and start it;
    return once its return door is open, or it has failed (or its payment waits for the rider to confirm
    it in their app). Returns (the order as it is now, created)."""
    order, created = await _order_for_key(
        db, rider_id=rider_id, cabinet_id=cabinet_id, coupon_code=coupon_code, key=idempotency_key
    )
    if order.status == SwapStatus.IN_PROGRESS:
        # The order is kept if Temporal is unreachable: the same Idempotency-Key starts it once it is back.
        client = await connect(temporal, "Swaps unavailable")
        try:
            await _admitted(db, client, settings, order)
        except (WorkflowAlreadyStartedError, WorkflowUpdateFailedError):
            pass  # already finished: the order row says how
    async with db.sessions() as session:
        fresh = await session.get(SwapOrder, order.id)
    if fresh is None:
        raise RuntimeError(f"swap order {order.id} vanished after it was opened")
    return fresh, created


async def _admitted(db: Database, client: Client, settings: Settings, order: SwapOrder) -> None:
    """Start the order's swap (or join it) and wait until its return door is open or it has failed; for a
    rider who pays in their app before any door opens, only until the payment waits for them (the answer
    then carries what the app confirms it with)."""
    if not await _confirmed_by_rider(db, order.rider_id):
        # The answer is read from the order row; the SDK types an async update's result as a coroutine.
        _ = await client.execute_update_with_start_workflow(
            SwapWorkflow.admission, start_workflow_operation=swap_start(settings, order)
        )
        return
    update = await client.start_update_with_start_workflow(
        SwapWorkflow.admission,
        start_workflow_operation=swap_start(settings, order),
        wait_for_stage=WorkflowUpdateStage.ACCEPTED,
    )
    admitted, waiting = asyncio.ensure_future(update.result()), asyncio.ensure_future(_payment_pending(db, order.id))
    try:
        await asyncio.wait((admitted, waiting), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (admitted, waiting):
            task.cancel()  # only this answer's wait: the swap goes on waiting for the payment
    if admitted.done() and not admitted.cancelled():
        _ = admitted.result()


async def _confirmed_by_rider(db: Database, rider_id: str) -> bool:
    """Whether the rider's swaps are paid by a charge that waits for them to confirm it in their app."""
    async with db.sessions() as session:
        return (await payer_method(session, rider_id)).method in CONFIRMED_BY_RIDER


async def _payment_pending(db: Database, order_id: str) -> None:
    """Returns once the swap's charge waits for the rider (polled: it takes the rider's time, not ours)."""
    key = charge_key(order_id)
    while True:
        await asyncio.sleep(PENDING_POLL_S)
        async with db.sessions() as session:
            if await confirmation_params(session, key) is not None:
                return


async def find_swap(session: AsyncSession, swap_id: str) -> SwapOrder:
    """The order, or NotFound."""
    order = await session.get(SwapOrder, swap_id)
    if order is None:
        raise NotFound("swap", swap_id)
    return order


async def swap_payment(session: AsyncSession, order: SwapOrder) -> Payment | None:
    """Our record of the swap's charge, once it was made."""
    return await payment_record(session, charge_key(order.id))


async def swap_refund(session: AsyncSession, order: SwapOrder) -> Refund | None:
    """The refund a finished swap opened, if any."""
    return await session.get(Refund, order.refund_ref) if order.refund_ref else None


async def swap_progress(temporal: TemporalConnector, order_id: str) -> SwapProgress | None:
    """A running swap's progress from its workflow; None while the workflow is not reachable."""
    try:
        client = await temporal()
        return await client.get_workflow_handle(swap_workflow_id(order_id)).query(
            SwapWorkflow.progress, rpc_timeout=timedelta(seconds=5)
        )
    except (RuntimeError, RPCError, WorkflowQueryFailedError):
        return None
