"""Rider complaints asking for money back: filed by the rider (or ops for them), approved by a city lead
or finance, which opens the swap's refund and starts its workflow."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.engine import Database
from swapflow.db.money import Complaint
from swapflow.db.swaps import SwapOrder
from swapflow.domain.errors import NotFound
from swapflow.payments.refunds import RefundOrigin
from swapflow.services.refunds import complaint_refund_id, open_order_refund, start_refund
from swapflow.services.temporal import TemporalConnector
from swapflow.settings import Settings


async def file_complaint(
    session: AsyncSession, *, rider_id: str, order_id: str, reason: str, amount_minor: int | None
) -> Complaint:
    """A new open complaint about one of the rider's swaps (NotFound: the rider has no such swap)."""
    order = await session.get(SwapOrder, order_id)
    if order is None or order.rider_id != rider_id:
        raise NotFound("swap", order_id, detail=f"rider {rider_id!r} has no swap {order_id!r}")
    complaint = Complaint(
        id=uuid.uuid4().hex,
        rider_id=rider_id,
        order_id=order_id,
        reason=reason,
        amount_minor=amount_minor,
        status="open",
    )
    session.add(complaint)
    await session.flush()
    return complaint


async def find_complaint(session: AsyncSession, complaint_id: str) -> Complaint:
    """The complaint, or NotFound."""
    complaint = await session.get(Complaint, complaint_id)
    if complaint is None:
        raise NotFound("complaint", complaint_id)
    return complaint


async def approve_complaint(
    db: Database, settings: Settings, temporal: TemporalConnector, complaint: Complaint
) -> Complaint:
    """Approve the complaint: its refund is opened and followed (approving again changes nothing).
    Returns the complaint as approved."""
    refund, _ = await open_order_refund(
        db,
        refund_id=complaint_refund_id(complaint.id),
        order_id=complaint.order_id,
        amount_minor=complaint.amount_minor,
        reason=f"complaint: {complaint.reason}"[:2000],
        origin=RefundOrigin.COMPLAINT,
    )
    async with db.transaction() as session:
        approved = await find_complaint(session, complaint.id)
        approved.status, approved.refund_id = "approved", refund.id
    await start_refund(temporal, settings, refund)
    return approved
