"""Rider swap endpoints: start a swap (idempotently) and follow it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from swapflow.api.auth import STAFF, Principal, require
from swapflow.api.deps import DatabaseDep, IdempotencyKey, SessionDep, SettingsDep, TemporalDep, answer_created
from swapflow.api.payment_schemas import RefundView
from swapflow.api.problems import problem_responses
from swapflow.api.schemas import SwapCreate, SwapView
from swapflow.db.cities import cabinet_city
from swapflow.domain.errors import Forbidden, NotFound
from swapflow.domain.swaps import SwapStatus
from swapflow.services.swaps import create_swap, find_swap, swap_payment, swap_progress, swap_refund

router = APIRouter(prefix="/v1/swaps", tags=["swaps"])

RiderOrAdmin = Annotated[Principal, Depends(require(riders=True))]
RiderOrStaff = Annotated[Principal, Depends(require(*STAFF, riders=True))]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=SwapView,
    responses={
        200: {"model": SwapView, "description": "The swap this Idempotency-Key already started"},
        **problem_responses(404, 409, 503),
    },
)
async def start_swap(
    body: SwapCreate,
    response: Response,
    db: DatabaseDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    idempotency_key: IdempotencyKey,
    principal: RiderOrAdmin,
) -> SwapView:
    """Start a swap and return once its return door is open (or it has failed). A rider who pays in the
    app (WeChat Pay) gets the answer once the payment waits for them, with what the app confirms it with
    (`payment.client_params`). The same Idempotency-Key returns the same swap. A rider starts their own
    swaps only."""
    if principal.is_rider and body.rider_id != principal.id:
        raise Forbidden("a rider starts swaps for themselves only")
    order, created = await create_swap(
        db,
        settings,
        temporal,
        rider_id=body.rider_id,
        cabinet_id=body.cabinet_id,
        coupon_code=body.coupon_code,
        idempotency_key=idempotency_key,
    )
    answer_created(response, created)
    async with db.sessions() as session:
        return SwapView.of(order, await swap_payment(session, order))


@router.get("/{swap_id}", response_model=SwapView)
async def get_swap(swap_id: str, session: SessionDep, temporal: TemporalDep, principal: RiderOrStaff) -> SwapView:
    """A swap's stage, each step's outcome and the reason for any rollback. While the swap runs they
    come from its workflow (a query); a finished swap's come from what its workflow recorded at the end.
    `payment` is our record of its charge; while it waits for the rider, with what the app confirms it with.
    A rider sees their own swaps only; an operator those at cabinets of their cities."""
    order = await find_swap(session, swap_id)
    if principal.is_rider and order.rider_id != principal.id:
        raise NotFound("swap", swap_id)
    if not principal.is_rider:
        principal.check_city(await cabinet_city(session, order.cabinet_id) or "", "swap", swap_id)
    view = SwapView.of(order, await swap_payment(session, order))
    if order.status != SwapStatus.IN_PROGRESS:
        refund = await swap_refund(session, order)
        return view.model_copy(update={"refund": RefundView.of(refund) if refund else None})
    progress = await swap_progress(temporal, order.id)
    if progress is None:
        return view  # the workflow is not reachable right now: as the database has it
    return view.model_copy(
        update={
            "status": progress.status,
            "stage": progress.stage,
            "failure_reason": progress.failure_reason,
            "return_slot_no": progress.return_slot_no,
            "charged_slot_no": progress.charged_slot_no,
            "steps": [step.model_dump(mode="json") for step in progress.steps],
            "source": "workflow",
        }
    )
