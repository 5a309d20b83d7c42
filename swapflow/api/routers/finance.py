"""Finance endpoints (finance accounts and admins): refunds stuck past their expected arrival (or
escalated) and the resolution of an escalated one, and a day's reconciliation with the payment providers
and the resolution of its differences."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Path

from swapflow.api.auth import Finance, check_rider_access
from swapflow.api.deps import DatabaseDep, SessionDep, SettingsDep, TemporalDep
from swapflow.api.payment_schemas import (
    ReconciliationExceptionView,
    ReconciliationRunView,
    ReconciliationView,
    RefundOffline,
    RefundResubmit,
    RefundTransfer,
    RefundView,
    Resolution,
)
from swapflow.api.problems import problem_responses
from swapflow.services import refunds
from swapflow.services.reconciliation import reconciliation_of, resolve_exception

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


RESOLVE_PROBLEMS = problem_responses(409)


async def _check_refund_access(db: DatabaseDep, principal: Finance, refund_id: str) -> None:
    """404 for a refund the caller may not see (another city's rider's)."""
    async with db.sessions() as session:
        refund = await refunds.find_refund(session, refund_id)
        await check_rider_access(session, principal, refund.rider_id, "refund", refund_id)


@router.post("/refunds/{refund_id}/resubmit", response_model=RefundView, responses=problem_responses(409, 503))
async def resubmit_refund(
    refund_id: str,
    body: RefundResubmit,
    db: DatabaseDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    principal: Finance,
) -> RefundView:
    """Send an escalated refund to its provider again (a new submission, followed by the refund workflow)."""
    await _check_refund_access(db, principal, refund_id)
    refund = await refunds.resubmit_refund(db, settings, temporal, refund_id, actor=principal.id, note=body.note)
    return RefundView.of(refund)


@router.post("/refunds/{refund_id}/paid-by-transfer", response_model=RefundView, responses=RESOLVE_PROBLEMS)
async def refund_paid_by_transfer(
    refund_id: str, body: RefundTransfer, db: DatabaseDep, principal: Finance
) -> RefundView:
    """Finance paid the rider an escalated refund another way: what the rider was owed is cleared against
    where the money left from."""
    await _check_refund_access(db, principal, refund_id)
    async with db.transaction() as session:
        refund = await refunds.pay_refund_by_transfer(
            session, refund_id, method=body.method, reference=body.reference, actor=principal.id, note=body.note
        )
        return RefundView.of(refund)


@router.post("/refunds/{refund_id}/refunded-offline", response_model=RefundView, responses=RESOLVE_PROBLEMS)
async def refunded_offline(refund_id: str, body: RefundOffline, db: DatabaseDep, principal: Finance) -> RefundView:
    """An escalated refund was returned outside swapflow through its provider: cleared like a landed one."""
    await _check_refund_access(db, principal, refund_id)
    async with db.transaction() as session:
        refund = await refunds.mark_refunded_offline(
            session, refund_id, reference=body.reference, actor=principal.id, note=body.note
        )
        return RefundView.of(refund)


@router.post(
    "/reconciliation/exceptions/{exception_id}/resolve",
    response_model=ReconciliationExceptionView,
    responses=RESOLVE_PROBLEMS,
)
async def resolve_reconciliation_exception(
    exception_id: Annotated[int, Path(ge=1, le=2**53)], body: Resolution, db: DatabaseDep, principal: Finance
) -> ReconciliationExceptionView:
    """Mark a reconciliation difference resolved, saying how (who and when are recorded)."""
    async with db.transaction() as session:
        row = await resolve_exception(session, exception_id, actor=principal.id, note=body.note)
        return ReconciliationExceptionView.model_validate(row)
