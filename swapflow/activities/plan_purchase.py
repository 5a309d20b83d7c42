"""The plan purchase workflow's activities: collect the purchase's payment through the rider's provider
(the swap charge's path), then settle it: the plan starts or extends if, and only if, the provider captured
the money; an authorization or pending payment that was not captured is voided at the provider."""

from __future__ import annotations

from sqlalchemy import select
from temporalio import activity

from swapflow.activities.payments import PaymentActivities
from swapflow.db.engine import Database
from swapflow.db.money import Payment, PlanPurchase
from swapflow.domain.checks import present
from swapflow.domain.clock import utcnow
from swapflow.payments.plans import PurchaseState, activate_plan, lock_purchase
from swapflow.payments.provider import PaymentStatus
from swapflow.workflows.plan_purchase_contract import PlanPurchaseOutcome, PlanPurchaseStart


class PlanPurchaseActivities:
    """What the plan purchase workflow does; one instance per worker."""

    def __init__(self, db: Database, payments: PaymentActivities) -> None:
        self.db = db
        self.payments = payments

    async def _payment(self, purchase_id: str) -> tuple[PlanPurchase, Payment]:
        async with self.db.sessions() as session:
            purchase = present(await session.get(PlanPurchase, purchase_id), f"plan purchase {purchase_id}")
            payment = present(
                await session.scalar(select(Payment).where(Payment.key == purchase.payment_key)),
                f"payment {purchase.payment_key} of plan purchase {purchase_id}",
            )
        return purchase, payment

    @activity.defn(name="collect_plan_purchase")
    async def collect(self, start: PlanPurchaseStart) -> None:
        """Take the purchase's money (heartbeating while the rider confirms); a refusal is non-retryable."""
        _, payment = await self._payment(start.purchase_id)
        await self.payments.collect(payment, description="battery swap plan")

    @activity.defn(name="settle_plan_purchase")
    async def settle(self, start: PlanPurchaseStart) -> PlanPurchaseOutcome:
        """Start the plan if the provider captured its price (asked, not assumed); otherwise void what is
        still open at the provider and record the purchase failed. Safe to repeat."""
        purchase, payment = await self._payment(start.purchase_id)
        if purchase.status != PurchaseState.PENDING:
            return _outcome(purchase)
        found = await self.payments.closed_unless_captured(payment)
        async with self.db.transaction() as session:
            locked = await lock_purchase(session, start.purchase_id)
            row = await session.scalar(select(Payment).where(Payment.key == payment.key))
            if locked is None or row is None:
                raise LookupError(f"plan purchase {start.purchase_id} or its payment {payment.key} is missing")
            purchase = locked
            if purchase.status != PurchaseState.PENDING:
                return _outcome(purchase)
            if found is not None and found.status == PaymentStatus.CAPTURED:
                row.status, row.provider_ref, row.amount_minor = found.status, found.payment_id, found.amount_minor
                row.captured_at = row.captured_at or utcnow()
                await activate_plan(session, purchase, row)
            else:
                row.status = found.status if found is not None else PaymentStatus.CLOSED
                purchase.status, purchase.settled_at = PurchaseState.FAILED, utcnow()
                purchase.failure_reason = f"payment {row.status}"
            return _outcome(purchase)


def _outcome(purchase: PlanPurchase) -> PlanPurchaseOutcome:
    return PlanPurchaseOutcome(
        purchase_id=purchase.id,
        status=purchase.status,
        plan_id=purchase.plan_id,
        amount_minor=purchase.amount_minor,
        reason=purchase.failure_reason,
    )
