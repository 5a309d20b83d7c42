"""The top-up workflow's activities: collect the top-up's payment through the rider's provider (the swap
charge's path: our record first, the provider asked before it is charged, a pending payment polled to
its deadline), then settle it: credit the wallet if, and only if, the provider captured the money; an
authorization or pending payment that was not captured is voided (closed) at the provider, so nothing
can be taken later for a top-up that failed."""

from __future__ import annotations

from sqlalchemy import select
from temporalio import activity

from swapflow.activities.payments import PaymentActivities
from swapflow.db.engine import Database
from swapflow.db.money import Payment, WalletTopUp
from swapflow.domain.checks import present
from swapflow.domain.clock import utcnow
from swapflow.payments.provider import PaymentStatus, ProviderDeclined
from swapflow.payments.topups import TopUpState, credit_top_up
from swapflow.workflows.topup_contract import TopUpOutcome, TopUpStart


class TopUpActivities:
    """What the top-up workflow does; one instance per worker."""

    def __init__(self, db: Database, payments: PaymentActivities) -> None:
        self.db = db
        self.payments = payments

    async def _payment(self, top_up_id: str) -> tuple[WalletTopUp, Payment]:
        async with self.db.sessions() as session:
            top_up = present(await session.get(WalletTopUp, top_up_id), f"top-up {top_up_id}")
            payment = present(
                await session.scalar(select(Payment).where(Payment.key == top_up.payment_key)),
                f"payment {top_up.payment_key} of top-up {top_up_id}",
            )
        return top_up, payment

    @activity.defn(name="collect_top_up")
    async def collect(self, start: TopUpStart) -> None:
        """Take the top-up's money (heartbeating while the rider confirms); a refusal is non-retryable."""
        _, payment = await self._payment(start.top_up_id)
        await self.payments.collect(payment, description="wallet top-up")

    @activity.defn(name="settle_top_up")
    async def settle(self, start: TopUpStart) -> TopUpOutcome:
        """Credit the top-up if the provider captured it (asked, not assumed); otherwise void what is still
        open at the provider and record the top-up failed. Safe to repeat."""
        top_up, payment = await self._payment(start.top_up_id)
        if top_up.status != TopUpState.PENDING:
            return _outcome(top_up)
        found = await self.payments.closed_unless_captured(payment)
        async with self.db.transaction() as session:
            locked = await session.get(WalletTopUp, start.top_up_id, with_for_update=True)
            row = await session.scalar(select(Payment).where(Payment.key == payment.key))
            if locked is None or row is None:
                raise LookupError(f"top-up {start.top_up_id} or its payment {payment.key} is missing")
            top_up = locked
            if top_up.status != TopUpState.PENDING:
                return _outcome(top_up)
            if found is not None and found.status == PaymentStatus.CAPTURED:
                row.status, row.provider_ref, row.amount_minor = found.status, found.payment_id, found.amount_minor
                try:
                    await credit_top_up(session, top_up, row)
                except ProviderDeclined as refused:
                    # Cannot happen for a top-up opened in the wallet's currency; never lose it silently.
                    raise RuntimeError(f"top-up {top_up.id} captured but not credited: {refused}") from None
            else:
                row.status = found.status if found is not None else PaymentStatus.CLOSED
                top_up.status, top_up.settled_at = TopUpState.FAILED, utcnow()
                top_up.failure_reason = f"payment {row.status}"
            return _outcome(top_up)


def _outcome(top_up: WalletTopUp) -> TopUpOutcome:
    return TopUpOutcome(
        top_up_id=top_up.id, status=top_up.status, amount_minor=top_up.amount_minor, reason=top_up.failure_reason
    )
