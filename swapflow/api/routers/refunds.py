"""Refund endpoints: an operator refunds (part of) a swap's capture; a rider follows a refund's status
and expected arrival, and lists their refunds."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from swapflow.api.auth import MoneyStaff, RiderOrMoneyStaff, check_rider_access
from swapflow.api.deps import DatabaseDep, IdempotencyKey, SessionDep, SettingsDep, TemporalDep, answer_created
from swapflow.api.payment_schemas import RefundCreate, RefundPage, RefundView
from swapflow.api.problems import problem_responses
from swapflow.services.refunds import find_refund, order_rider, refund_order, rider_refunds

router = APIRouter(tags=["refunds"])

Limit = Annotated[int, Query(ge=1, le=200)]
Cursor = Annotated[str | None, Query(min_length=1, max_length=80, description="The previous page's `next_cursor`.")]


@router.post(
    "/v1/refunds",
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


@router.get("/v1/refunds/{refund_id}", response_model=RefundView)
async def get_refund(refund_id: str, session: SessionDep, principal: RiderOrMoneyStaff) -> RefundView:
    """A refund's status and when the money should arrive (the rider's own, or ops' and finance's)."""
    refund = await find_refund(session, refund_id)
    await check_rider_access(session, principal, refund.rider_id, "refund", refund_id)
    return RefundView.of(refund)


@router.get("/v1/riders/{rider_id}/refunds", response_model=RefundPage)
async def list_rider_refunds(
    rider_id: str, session: SessionDep, principal: RiderOrMoneyStaff, cursor: Cursor = None, limit: Limit = 50
) -> RefundPage:
    """A rider's refunds and where each stands, newest first, a page at a time (the rider's own, or money
    staff's for riders of their cities)."""
    await check_rider_access(session, principal, rider_id, "rider", rider_id)
    page = await rider_refunds(session, rider_id, cursor=cursor, limit=limit)
    return RefundPage(items=[RefundView.of(refund) for refund in page.refunds], next_cursor=page.next_cursor)
