"""Rider swap endpoints: start a swap (idempotently) and follow it."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Response, status
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from temporalio.client import WithStartWorkflowOperation, WorkflowQueryFailedError, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from swapflow.api.auth import STAFF, Principal, require
from swapflow.api.deps import DatabaseDep, SessionDep, SettingsDep, TemporalDep
from swapflow.api.problems import Problem, problem_responses
from swapflow.api.routers.pricing import check_coupon
from swapflow.api.routers.refunds import refund_view
from swapflow.api.schemas import SwapCreate, SwapView
from swapflow.db.cities import cabinet_city
from swapflow.db.money import Refund
from swapflow.db.network import Cabinet, Rider
from swapflow.db.swaps import SwapOrder
from swapflow.domain.clock import utcnow
from swapflow.domain.pricing import normalise_code
from swapflow.domain.swaps import SwapStatus
from swapflow.services.swaps import swap_request
from swapflow.workflows.swap import SwapWorkflow
from swapflow.workflows.swap_contract import swap_workflow_id

router = APIRouter(prefix="/v1/swaps", tags=["swaps"])

RiderOrAdmin = Annotated[Principal, Depends(require(riders=True))]
RiderOrStaff = Annotated[Principal, Depends(require(*STAFF, riders=True))]


def swap_view(order: SwapOrder) -> SwapView:
    """The API's view of an order."""
    fields = {
        name: getattr(order, name) for name in SwapView.model_fields if name not in ("workflow_id", "source", "refund")
    }
    return SwapView(**fields, workflow_id=swap_workflow_id(order.id), source="database")


async def _order_for_key(db: DatabaseDep, body: SwapCreate, key: str) -> tuple[SwapOrder, bool]:
    """The order this idempotency key names, created if new. Returns (order, created)."""
    async with db.transaction() as session:
        order = await session.scalar(
            select(SwapOrder).where(SwapOrder.rider_id == body.rider_id, SwapOrder.idempotency_key == key)
        )
        if order is None:
            if await session.get(Rider, body.rider_id) is None:
                raise Problem(404, "Unknown rider", f"no rider {body.rider_id!r}")
            if await session.get(Cabinet, body.cabinet_id) is None:
                raise Problem(404, "Unknown cabinet", f"no cabinet {body.cabinet_id!r}")
            created_at = utcnow()  # the time the swap is priced at, here and at admission
            if body.coupon_code is not None:
                await check_coupon(
                    session,
                    rider_id=body.rider_id,
                    cabinet_id=body.cabinet_id,
                    at=created_at,
                    coupon_code=body.coupon_code,
                )
            order = SwapOrder(
                id=uuid.uuid4().hex,
                rider_id=body.rider_id,
                cabinet_id=body.cabinet_id,
                idempotency_key=key,
                steps=[],
                created_at=created_at,
                coupon_code=normalise_code(body.coupon_code) if body.coupon_code else None,
            )
            session.add(order)
            try:
                await session.flush()
            except IntegrityError:
                order = None
            else:
                return order, True
    if order is None:  # a concurrent request with the same key won the insert
        async with db.sessions() as session:
            order = await session.scalar(
                select(SwapOrder).where(SwapOrder.rider_id == body.rider_id, SwapOrder.idempotency_key == key)
            )
        assert order is not None
    if order.cabinet_id != body.cabinet_id:
        raise Problem(
            409,
            "Idempotency-Key reused",
            f"Idempotency-Key {key!r} was used for a swap at cabinet {order.cabinet_id!r}",
        )
    if order.coupon_code != (normalise_code(body.coupon_code) if body.coupon_code else None):
        raise Problem(
            409,
            "Idempotency-Key reused",
            f"Idempotency-Key {key!r} was used for a swap with coupon {order.coupon_code!r}",
        )
    return order, False


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
    idempotency_key: Annotated[str, Header(alias="Idempotency-Key", min_length=1, max_length=100)],
    principal: RiderOrAdmin,
) -> SwapView:
    """Start a swap and return once its return door is open (or it has failed). The same
    Idempotency-Key returns the same swap. A rider starts their own swaps only."""
    if principal.is_rider and body.rider_id != principal.id:
        raise Problem(403, "Forbidden", "a rider starts swaps for themselves only")
    order, created = await _order_for_key(db, body, idempotency_key)
    if not created:
        response.status_code = status.HTTP_200_OK
    if order.status == SwapStatus.IN_PROGRESS:
        request = swap_request(
            settings,
            order_id=order.id,
            rider_id=order.rider_id,
            cabinet_id=order.cabinet_id,
            coupon_code=order.coupon_code,
        )
        start = WithStartWorkflowOperation(
            SwapWorkflow.run,
            request,
            id=swap_workflow_id(order.id),
            task_queue=settings.temporal_task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            # A finished swap is never run again under the same id.
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
        try:
            client = await temporal()
        except RuntimeError as exc:
            # The order is kept: the same Idempotency-Key starts it once Temporal is back.
            raise Problem(503, "Swaps unavailable", f"workflow service unreachable: {exc}") from exc
        try:
            # The answer is read from the order row below; the SDK types an async update's result as a coroutine.
            _ = await client.execute_update_with_start_workflow(SwapWorkflow.admission, start_workflow_operation=start)
        except (WorkflowAlreadyStartedError, WorkflowUpdateFailedError):
            pass  # already finished: the order row says how
    async with db.sessions() as session:
        fresh = await session.get(SwapOrder, order.id)
    assert fresh is not None
    return swap_view(fresh)


@router.get("/{swap_id}", response_model=SwapView)
async def get_swap(swap_id: str, session: SessionDep, temporal: TemporalDep, principal: RiderOrStaff) -> SwapView:
    """A swap's stage, each step's outcome and the reason for any rollback. While the swap runs they
    come from its workflow (a query); a finished swap's come from what its workflow recorded at the end.
    A rider sees their own swaps only; an operator those at cabinets of their cities."""
    order = await session.get(SwapOrder, swap_id)
    if order is None or (principal.is_rider and order.rider_id != principal.id):
        raise Problem(404, "Unknown swap", f"no swap {swap_id!r}")
    if not principal.is_rider:
        principal.check_city(await cabinet_city(session, order.cabinet_id) or "", "swap", swap_id)
    view = swap_view(order)
    if order.status != SwapStatus.IN_PROGRESS:
        refund = await session.get(Refund, order.refund_ref) if order.refund_ref else None
        return view.model_copy(update={"refund": refund_view(refund) if refund else None})
    try:
        client = await temporal()
        progress = await client.get_workflow_handle(swap_workflow_id(order.id)).query(
            SwapWorkflow.progress, rpc_timeout=timedelta(seconds=5)
        )
    except (RuntimeError, RPCError, WorkflowQueryFailedError):
        return view.model_copy(update={"source": "database"})  # the workflow is not reachable right now
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
