"""Refund endpoints: an operator refunds (part of) a swap's capture; a rider follows a refund's status
and expected arrival."""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import APIRouter, Header, Response, status
from sqlalchemy import select
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from swapflow.api.auth import MoneyStaff, RiderOrMoneyStaff, check_rider_access
from swapflow.api.deps import DatabaseDep, SessionDep, SettingsDep, TemporalDep
from swapflow.api.payment_schemas import RefundCreate, RefundView
from swapflow.api.problems import Problem, problem_responses
from swapflow.db.engine import Database
from swapflow.db.money import Payment, Refund
from swapflow.db.swaps import SwapOrder
from swapflow.domain.swaps import SwapStatus
from swapflow.payments.refunds import RefundOrigin, RefundRefused, charge_key, open_refund
from swapflow.settings import Settings
from swapflow.workflows.refund import RefundWorkflow
from swapflow.workflows.refund_contract import RefundStart, refund_workflow_id

router = APIRouter(prefix="/v1/refunds", tags=["refunds"])


def refund_view(refund: Refund) -> RefundView:
    """The API's view of a refund."""
    return RefundView(
        **{name: getattr(refund, name) for name in RefundView.model_fields if name != "workflow_id"},
        workflow_id=refund_workflow_id(refund.id),
    )


async def open_order_refund(
    db: Database, *, refund_id: str, order_id: str, amount_minor: int | None, reason: str, origin: RefundOrigin
) -> tuple[Refund, bool]:
    """Open refund `refund_id` of the order's capture (a problem if it may not be). Returns (refund, created)."""
    async with db.transaction() as session:
        existing = await session.get(Refund, refund_id)
        if existing is not None:
            return existing, False
        order = await session.get(SwapOrder, order_id)
        if order is None:
            raise Problem(404, "Unknown swap", f"no swap {order_id!r}")
        if order.status == SwapStatus.IN_PROGRESS:
            # Its charge is still deferred: a failure refunds it anyway, a completion recognises it first.
            raise Problem(409, "Swap still running", f"swap {order_id!r} has not finished; refund it once it has")
        payment = await session.scalar(select(Payment).where(Payment.key == charge_key(order_id)))
        if payment is None:
            raise Problem(409, "Nothing to refund", f"swap {order_id!r} was never charged")
        try:
            return await open_refund(
                session, refund_id=refund_id, payment=payment, amount_minor=amount_minor, reason=reason, origin=origin
            )
        except RefundRefused as refused:
            raise Problem(409, "Refund refused", str(refused)) from None


async def start_refund_workflow(temporal: TemporalDep, settings: Settings, refund: Refund) -> None:
    """Start the workflow that follows an opened refund (once: a finished one is never started again)."""
    try:
        client = await temporal()
    except RuntimeError as exc:
        # The refund is kept: the same request starts its workflow once Temporal is back.
        raise Problem(503, "Refunds unavailable", f"workflow service unreachable: {exc}") from exc
    start = RefundStart(
        refund_id=refund.id,
        order_id=refund.order_id,
        reason=refund.reason,
        origin=refund.origin,
        opened=True,
        poll_schedule_s=tuple(settings.refund_poll_schedule_s),
        expected_days=settings.refund_expected_days,
    )
    try:
        await client.start_workflow(
            RefundWorkflow.run,
            start,
            id=refund_workflow_id(refund.id),
            task_queue=settings.temporal_task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
    except WorkflowAlreadyStartedError:
        pass  # already ran to the end


def operator_refund_id(order_id: str, idempotency_key: str) -> str:
    """The id of an operator's refund: from the order and the request's Idempotency-Key, so a repeated
    request opens nothing new."""
    digest = hashlib.sha256(f"{order_id}\n{idempotency_key}".encode()).hexdigest()[:24]
    return f"op-{digest}"


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
    idempotency_key: Annotated[str, Header(alias="Idempotency-Key", min_length=1, max_length=100)],
) -> RefundView:
    """An operator refunds (part of) a swap's capture; never more than what is left of it."""
    async with db.sessions() as session:
        order = await session.get(SwapOrder, body.order_id)
        await check_rider_access(session, principal, order.rider_id if order else "", "swap", body.order_id)
    refund, created = await open_order_refund(
        db,
        refund_id=operator_refund_id(body.order_id, idempotency_key),
        order_id=body.order_id,
        amount_minor=body.amount_minor,
        reason=body.reason,
        origin=RefundOrigin.OPERATOR,
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    await start_refund_workflow(temporal, settings, refund)
    return refund_view(refund)


@router.get("/{refund_id}", response_model=RefundView)
async def get_refund(refund_id: str, session: SessionDep, principal: RiderOrMoneyStaff) -> RefundView:
    """A refund's status and when the money should arrive (the rider's own, or ops' and finance's)."""
    refund = await session.get(Refund, refund_id)
    if refund is None:
        raise Problem(404, "Unknown refund", f"no refund {refund_id!r}")
    await check_rider_access(session, principal, refund.rider_id, "refund", refund_id)
    return refund_view(refund)
