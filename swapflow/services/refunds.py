"""Refunds of a swap's capture: an operator's (one per Idempotency-Key) or an approved complaint's,
opened here and followed by the refund workflow, which `start_refund` starts (the one place that says
how); finance's list of stuck refunds."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.engine import Database
from swapflow.db.money import Payment, Refund
from swapflow.db.swaps import SwapOrder
from swapflow.domain.clock import utcnow
from swapflow.domain.errors import Conflict, NotFound
from swapflow.domain.swaps import SwapStatus
from swapflow.payments.refunds import RefundOrigin, RefundRefused, RefundState, charge_key, open_refund
from swapflow.services.idempotency import create_once
from swapflow.services.temporal import TemporalConnector, connect, start_once
from swapflow.settings import Settings
from swapflow.workflows.refund import RefundWorkflow
from swapflow.workflows.refund_contract import RefundStart, refund_workflow_id

UNSUBMITTED_AFTER = timedelta(hours=1)
"""A refund not accepted by its provider after this long is stuck too (its workflow never got it there)."""


def operator_refund_id(order_id: str, idempotency_key: str) -> str:
    """The id of an operator's refund: from the order and the request's Idempotency-Key, so a repeated
    request opens nothing new."""
    digest = hashlib.sha256(f"{order_id}\n{idempotency_key}".encode()).hexdigest()[:24]
    return f"op-{digest}"


def complaint_refund_id(complaint_id: str) -> str:
    """The refund an approved complaint opens: one per complaint, however often it is approved."""
    return f"complaint-{complaint_id}"


async def open_order_refund(
    db: Database, *, refund_id: str, order_id: str, amount_minor: int | None, reason: str, origin: RefundOrigin
) -> tuple[Refund, bool]:
    """Open refund `refund_id` of the order's capture: NotFound without the order, Conflict while it runs,
    if it was never charged or the refund does not fit. The same id returns the refund it opened.
    Returns (refund, created)."""
    async with db.transaction() as session:

        async def find() -> Refund | None:
            return await session.get(Refund, refund_id)

        async def create() -> Refund | None:
            order = await session.get(SwapOrder, order_id)
            if order is None:
                raise NotFound("swap", order_id)
            if order.status == SwapStatus.IN_PROGRESS:
                # Its charge is still deferred: a failure refunds it anyway, a completion recognises it first.
                raise Conflict("Swap still running", f"swap {order_id!r} has not finished; refund it once it has")
            payment = await session.scalar(select(Payment).where(Payment.key == charge_key(order_id)))
            if payment is None:
                raise Conflict("Nothing to refund", f"swap {order_id!r} was never charged")
            try:
                refund, opened = await open_refund(
                    session,
                    refund_id=refund_id,
                    payment=payment,
                    amount_minor=amount_minor,
                    reason=reason,
                    origin=origin,
                )
            except RefundRefused as refused:
                raise Conflict("Refund refused", str(refused)) from None
            return refund if opened else None  # a concurrent request opened it

        return await create_once(session, find=find, create=create)


async def start_refund(temporal: TemporalConnector, settings: Settings, refund: Refund) -> None:
    """Start the workflow that follows an opened refund (once: a finished one is never started again).
    Unavailable while Temporal is unreachable; the refund is kept, and the same request starts it later."""
    client = await connect(temporal, "Refunds unavailable")
    start = RefundStart(
        refund_id=refund.id,
        order_id=refund.order_id,
        reason=refund.reason,
        origin=refund.origin,
        opened=True,
        poll_schedule_s=tuple(settings.payments.refund_poll_schedule_s),
        expected_days=settings.payments.refund_expected_days,
    )
    await start_once(
        client,
        RefundWorkflow.run,
        start,
        workflow_id=refund_workflow_id(refund.id),
        task_queue=settings.temporal.task_queue,
    )


async def refund_order(
    db: Database,
    settings: Settings,
    temporal: TemporalConnector,
    *,
    order_id: str,
    amount_minor: int | None,
    reason: str,
    idempotency_key: str,
) -> tuple[Refund, bool]:
    """An operator's refund of (part of) a swap's capture, once per Idempotency-Key, followed by its
    workflow. Returns (refund, created)."""
    refund, created = await open_order_refund(
        db,
        refund_id=operator_refund_id(order_id, idempotency_key),
        order_id=order_id,
        amount_minor=amount_minor,
        reason=reason,
        origin=RefundOrigin.OPERATOR,
    )
    await start_refund(temporal, settings, refund)
    return refund, created


async def find_refund(session: AsyncSession, refund_id: str) -> Refund:
    """The refund, or NotFound."""
    refund = await session.get(Refund, refund_id)
    if refund is None:
        raise NotFound("refund", refund_id)
    return refund


async def order_rider(session: AsyncSession, order_id: str) -> str | None:
    """The rider of a swap order, if there is one."""
    order = await session.get(SwapOrder, order_id)
    return order.rider_id if order else None


async def stuck_refunds(session: AsyncSession) -> list[Refund]:
    """Refunds past their expected arrival, never accepted by the provider, or escalated to finance."""
    now = utcnow()
    rows = await session.scalars(
        select(Refund)
        .where(
            or_(
                and_(Refund.status == RefundState.PROCESSING, Refund.expected_by < now),
                and_(Refund.status == RefundState.REQUESTED, Refund.created_at < now - UNSUBMITTED_AFTER),
                Refund.status == RefundState.ESCALATED,
            )
        )
        .order_by(Refund.created_at)
    )
    return list(rows)
