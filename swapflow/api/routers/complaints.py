"""Rider complaints asking for money back: a rider files one, ops approve it, which refunds the swap
through the refund workflow."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, status

from swapflow.api.auth import Principal, RiderOrMoneyStaff, check_rider_access, require
from swapflow.api.deps import DatabaseDep, SessionDep, SettingsDep, TemporalDep
from swapflow.api.payment_schemas import ComplaintCreate, ComplaintView
from swapflow.api.problems import Problem, problem_responses
from swapflow.api.routers.refunds import open_order_refund, start_refund_workflow
from swapflow.db.money import Complaint
from swapflow.db.swaps import SwapOrder
from swapflow.domain.ops import OperatorRole
from swapflow.payments.refunds import RefundOrigin

router = APIRouter(prefix="/v1/complaints", tags=["complaints"])

Approver = Annotated[Principal, Depends(require(OperatorRole.CITY_LEAD, OperatorRole.FINANCE))]


def complaint_refund_id(complaint_id: str) -> str:
    """The refund an approved complaint opens: one per complaint, however often it is approved."""
    return f"complaint-{complaint_id}"


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ComplaintView, responses=problem_responses(404))
async def file_complaint(body: ComplaintCreate, db: DatabaseDep, principal: RiderOrMoneyStaff) -> ComplaintView:
    """A rider asks for (part of) a swap's money back (ops may file it for them); nothing moves until a
    city lead or finance approves."""
    async with db.transaction() as session:
        await check_rider_access(session, principal, body.rider_id, "swap", body.order_id)
        order = await session.get(SwapOrder, body.order_id)
        if order is None or order.rider_id != body.rider_id:
            raise Problem(404, "Unknown swap", f"rider {body.rider_id!r} has no swap {body.order_id!r}")
        complaint = Complaint(
            id=uuid.uuid4().hex,
            rider_id=body.rider_id,
            order_id=body.order_id,
            reason=body.reason,
            amount_minor=body.amount_minor,
            status="open",
        )
        session.add(complaint)
        await session.flush()
        return ComplaintView.model_validate(complaint)


@router.get("/{complaint_id}", response_model=ComplaintView)
async def get_complaint(complaint_id: str, session: SessionDep, principal: RiderOrMoneyStaff) -> ComplaintView:
    """A complaint and the refund its approval opened."""
    complaint = await session.get(Complaint, complaint_id)
    if complaint is None:
        raise Problem(404, "Unknown complaint", f"no complaint {complaint_id!r}")
    await check_rider_access(session, principal, complaint.rider_id, "complaint", complaint_id)
    return ComplaintView.model_validate(complaint)


@router.post("/{complaint_id}/approve", response_model=ComplaintView, responses=problem_responses(409, 503))
async def approve_complaint(
    complaint_id: str, db: DatabaseDep, settings: SettingsDep, temporal: TemporalDep, principal: Approver
) -> ComplaintView:
    """A city lead or finance approves a complaint: its refund is opened and followed (approving again
    changes nothing)."""
    async with db.sessions() as session:
        complaint = await session.get(Complaint, complaint_id)
        if complaint is None:
            raise Problem(404, "Unknown complaint", f"no complaint {complaint_id!r}")
        await check_rider_access(session, principal, complaint.rider_id, "complaint", complaint_id)
    refund, _ = await open_order_refund(
        db,
        refund_id=complaint_refund_id(complaint.id),
        order_id=complaint.order_id,
        amount_minor=complaint.amount_minor,
        reason=f"complaint: {complaint.reason}"[:2000],
        origin=RefundOrigin.COMPLAINT,
    )
    async with db.transaction() as session:
        row = await session.get(Complaint, complaint_id)
        assert row is not None
        row.status, row.refund_id = "approved", refund.id
        view = ComplaintView.model_validate(row)
    await start_refund_workflow(temporal, settings, refund)
    return view
