"""Finance endpoints (finance accounts and admins): refunds stuck past their expected arrival (or
escalated), and a day's reconciliation with the payment providers."""

from __future__ import annotations

from datetime import date

from fastapi import APIRouter

from swapflow.api.auth import Finance
from swapflow.api.deps import SessionDep
from swapflow.api.payment_schemas import (
    ReconciliationExceptionView,
    ReconciliationRunView,
    ReconciliationView,
    RefundView,
)
from swapflow.services import refunds
from swapflow.services.reconciliation import reconciliation_of

router = APIRouter(prefix="/v1/finance", tags=["finance"])


@router.get("/refunds/stuck", response_model=list[RefundView])
async def stuck_refunds(session: SessionDep, _: Finance) -> list[RefundView]:
    """Refunds past their expected arrival, never accepted by the provider, or escalated to finance."""
    return [RefundView.of(row) for row in await refunds.stuck_refunds(session)]


@router.get("/reconciliation/{day}", response_model=ReconciliationView)
async def reconciliation(day: date, session: SessionDep, _: Finance) -> ReconciliationView:
    """A day's reconciliation per provider and every difference filed for finance."""
    runs, exceptions = await reconciliation_of(session, day)
    return ReconciliationView(
        day=day.isoformat(),
        runs=[ReconciliationRunView.model_validate(r) for r in runs],
        exceptions=[ReconciliationExceptionView.model_validate(e) for e in exceptions],
    )
