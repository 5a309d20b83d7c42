"""Rider complaints asking for money back: a rider files one, ops approve it, which refunds the swap
through the refund workflow."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, status

from swapflow.api.auth import Principal, RiderOrMoneyStaff, check_rider_access, require
from swapflow.api.deps import DatabaseDep, SessionDep, SettingsDep, TemporalDep
from swapflow.api.payment_schemas import ComplaintCreate, ComplaintView
from swapflow.api.problems import problem_responses
from swapflow.domain.ops import OperatorRole
from swapflow.services import complaints

router = APIRouter(prefix="/v1/complaints", tags=["complaints"])

Approver = Annotated[Principal, Depends(require(OperatorRole.CITY_LEAD, OperatorRole.FINANCE))]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ComplaintView, responses=problem_responses(404))
async def file_complaint(body: ComplaintCreate, db: DatabaseDep, principal: RiderOrMoneyStaff) -> ComplaintView:
    """A rider asks for (part of) a swap's money back (ops may file it for them); nothing moves until a
    city lead or finance approves."""
    async with db.transaction() as session:
        await check_rider_access(session, principal, body.rider_id, "swap", body.order_id)
        complaint = await complaints.file_complaint(
            session,
            rider_id=body.rider_id,
            order_id=body.order_id,
            reason=body.reason,
            amount_minor=body.amount_minor,
        )
        return ComplaintView.model_validate(complaint)


@router.get("/{complaint_id}", response_model=ComplaintView)
async def get_complaint(complaint_id: str, session: SessionDep, principal: RiderOrMoneyStaff) -> ComplaintView:
    """A complaint and the refund its approval opened."""
    complaint = await complaints.find_complaint(session, complaint_id)
    await check_rider_access(session, principal, complaint.rider_id, "complaint", complaint_id)
    return ComplaintView.model_validate(complaint)


@router.post("/{complaint_id}/approve", response_model=ComplaintView, responses=problem_responses(409, 503))
async def approve_complaint(
    complaint_id: str, db: DatabaseDep, settings: SettingsDep, temporal: TemporalDep, principal: Approver
) -> ComplaintView:
    """A city lead or finance approves a complaint: its refund is opened and followed (approving again
    changes nothing)."""
    async with db.sessions() as session:
        complaint = await complaints.find_complaint(session, complaint_id)
        await check_rider_access(session, principal, complaint.rider_id, "complaint", complaint_id)
    approved = await complaints.approve_complaint(db, settings, temporal, complaint)
    return ComplaintView.model_validate(approved)
