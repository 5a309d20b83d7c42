"""Reconciliation: one day of our payments and refunds compared with each provider's own statement.
Every difference is filed as a `reconciliation_exceptions` row for finance; nothing is ever corrected
here. Re-running a day files no difference twice."""

from __future__ import annotations

from datetime import date

from sqlalchemy import select
from temporalio import activity

from swapflow.db.engine import Database
from swapflow.db.models import Payment, ReconciliationException, ReconciliationRun, Refund
from swapflow.payments.provider import PaymentMethod, PaymentProvider, PaymentStatus, RefundStatus, day_bounds
from swapflow.workflows.payment_models import ProviderReconciliation, ReconcileProvider, ReconciliationReport

_NO_MONEY = (RefundStatus.CLOSED.value, RefundStatus.FAILED.value, "declined")


async def our_movements(db: Database, day: date, method: str) -> dict[str, int]:
    """Our record of a provider's day: captures (positive) and accepted refunds (negative), by key."""
    start, end = day_bounds(day)
    async with db.sessions() as session:
        payments = (await session.execute(select(Payment.key, Payment.amount_minor).where(
            Payment.method == method, Payment.status == PaymentStatus.CAPTURED, Payment.created_at >= start,
            Payment.created_at < end))).all()
        refunds = (await session.execute(select(Refund.key, Refund.amount_minor).where(
            Refund.method == method, Refund.submitted_at >= start, Refund.submitted_at < end,
            Refund.provider_status.not_in(_NO_MONEY)))).all()
    return {**{key: amount for key, amount in payments}, **{key: -amount for key, amount in refunds}}


async def reconcile_provider(db: Database, provider: PaymentProvider, day: date) -> ProviderReconciliation:
    """Compare one provider's statement of `day` with ours; file each difference."""
    ours = await our_movements(db, day, provider.method)
    lines = await provider.statement(day)
    theirs: dict[str, int] = {}
    for line in lines:
        ref = line.key or f"provider:{line.provider_ref}"
        theirs[ref] = theirs.get(ref, 0) + line.amount_minor
    differences: list[tuple[str, str, int | None, int | None]] = []
    for ref in sorted(ours.keys() | theirs.keys()):
        mine, their = ours.get(ref), theirs.get(ref)
        if their is None:
            differences.append((ref, "missing_at_provider", mine, None))
        elif mine is None:
            differences.append((ref, "missing_in_ours", None, their))
        elif mine != their:
            differences.append((ref, "amount_mismatch", mine, their))
    name = day.isoformat()
    async with db.transaction() as session:
        for ref, kind, mine, their in differences:
            known = await session.scalar(select(ReconciliationException).where(
                ReconciliationException.day == name, ReconciliationException.provider == provider.method,
                ReconciliationException.ref == ref))
            if known is None:
                session.add(ReconciliationException(
                    day=name, provider=provider.method, ref=ref, kind=kind, ours_minor=mine, theirs_minor=their,
                    detail=f"{kind}: ours {mine}, provider's {their}"))
        run = await session.scalar(select(ReconciliationRun).where(
            ReconciliationRun.day == name, ReconciliationRun.provider == provider.method))
        if run is None:
            run = ReconciliationRun(day=name, provider=provider.method, ours=0, theirs=0, matched=0, exceptions=0)
            session.add(run)
        run.ours, run.theirs = len(ours), len(theirs)
        run.matched = len(ours.keys() & theirs.keys()) - sum(1 for d in differences if d[1] == "amount_mismatch")
        run.exceptions = len(differences)
    return ProviderReconciliation(provider=provider.method, ours=len(ours), theirs=len(theirs), matched=run.matched,
                                  exceptions=len(differences))


class ReconciliationActivities:
    """The reconciliation workflow's activity; one instance per worker."""

    def __init__(self, db: Database, providers: dict[PaymentMethod, PaymentProvider]) -> None:
        self.db = db
        self.providers = providers

    @activity.defn(name="reconcile_day")
    async def reconcile(self, request: ReconcileProvider) -> ReconciliationReport:
        """Reconcile `request.day` with every provider (`request.provider` "*") or one."""
        chosen = [p for m, p in self.providers.items() if request.provider in ("*", m.value)]
        results = [await reconcile_provider(self.db, provider, request.day) for provider in chosen]
        return ReconciliationReport(day=request.day, providers=tuple(results))
