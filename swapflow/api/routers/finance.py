"""Finance endpoints (finance accounts and admins): refunds stuck past their expected arrival (or
escalated), and a day's reconciliation with the payment providers."""

from __future__ import annotations

from datetime import date, timedelta

from fastapi import APIRouter
from sqlalchemy import and_, or_, select

from swapflow.api.auth import Finance
from swapflow.api.deps import SessionDep
from swapflow.api.payment_schemas import (
    ReconciliationExceptionView,
    ReconciliationRunView,
    ReconciliationView,
    RefundView,
)
from swapflow.api.routers.refunds import refund_view
from swapflow.db.money import ReconciliationException, ReconciliationRun, Refund
from swapflow.domain.clock import utcnow
from swapflow.payments.refunds import RefundState

router = APIRouter(prefix="/v1/finance", tags=["finance"])

UNSUBMITTED_AFTER = timedelta(hours=1)
"""A refund not accepted by its provider after this long is stuck too (its workflow never got it there)."""


@router.get("/refunds/stuck", response_model=list[RefundView])
async def stuck_refunds(session: SessionDep, _: Finance) -> list[RefundView]:
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
    return [refund_view(row) for row in rows]


@router.get("/reconciliation/{day}", response_model=ReconciliationView)
async def reconciliation(day: date, session: SessionDep, _: Finance) -> ReconciliationView:
    """A day's reconciliation per provider and every difference filed for finance."""
    runs = await session.scalars(
        select(ReconciliationRun).where(ReconciliationRun.day == day.isoformat()).order_by(ReconciliationRun.provider)
    )
    exceptions = await session.scalars(
        select(ReconciliationException)
        .where(ReconciliationException.day == day.isoformat())
        .order_by(ReconciliationException.id)
    )
    return ReconciliationView(
        day=day.isoformat(),
        runs=[ReconciliationRunView.model_validate(r) for r in runs],
        exceptions=[ReconciliationExceptionView.model_validate(e) for e in exceptions],
    )
