"""Refund endpoints: an operator refunds (part of) a swap's capture; a rider follows a refund's status
and expected arrival."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from swapflow.api.auth import MoneyStaff, RiderOrMoneyStaff, check_rider_access
from swapflow.api.deps import DatabaseDep, IdempotencyKey, SessionDep, SettingsDep, TemporalDep, answer_created
from swapflow.api.payment_schemas import RefundCreate, RefundView
from swapflow.api.problems import problem_responses
from swapflow.services.refunds import find_refund, order_rider, refund_order

router = APIRouter(prefix="/v1/refunds", tags=["refunds"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=RefundView,
    responses={
        200: {"model": RefundView, "description": "The refund this Idempotency-Key already opened"},
        **problem_responses(404, 409, 503),
    },
)
async def create_refund(
    body: RefundCreate,
    response: Response,
    db: DatabaseDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    principal: MoneyStaff,
    idempotency_key: IdempotencyKey,
) -> RefundView:
    """An operator refunds (part of) a swap's capture; never more than what is left of it."""
    async with db.sessions() as session:
        rider_id = await order_rider(session, body.order_id)
        await check_rider_access(session, principal, rider_id or "", "swap", body.order_id)
    refund, created = await refund_order(
        db,
        settings,
        temporal,
        order_id=body.order_id,
        amount_minor=body.amount_minor,
        reason=body.reason,
        idempotency_key=idempotency_key,
    )
    answer_created(response, created)
    return RefundView.of(refund)


@router.get("/{refund_id}", response_model=RefundView)
async def get_refund(refund_id: str, session: SessionDep, principal: RiderOrMoneyStaff) -> RefundView:
    """A refund's status and when the money should arrive (the rider's own, or ops' and finance's)."""
    refund = await find_refund(session, refund_id)
    await check_rider_access(session, principal, refund.rider_id, "refund", refund_id)
    return RefundView.of(refund)
