"""Where money moves: charging a swap and refunding it through the payment provider, then the ledger
postings. Keys come from the swap, so a retried activity never charges or refunds twice, and a charge
whose answer was lost is resolved by asking the provider before anything is decided."""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from swapflow.db.engine import Database
from swapflow.db.models import SwapOrder, SwapStage
from swapflow.ledger import DEFERRED_REVENUE, Posting, post_transaction, provider_clearing
from swapflow.payments.sandbox import PROVIDER, ProviderPayment, SandboxProvider
from swapflow.workflows.models import ChargeInput, PaymentResult, RefundInput, RefundResult

PAYMENT_DECLINED = "PaymentDeclined"


def charge_key(order_id: str) -> str:
    """Idempotency key of a swap's charge."""
    return f"swap:{order_id}:charge"


def refund_key(order_id: str) -> str:
    """Idempotency key of a swap's refund: one refund per failed swap."""
    return f"swap:{order_id}:refund"


class PaymentActivities:
    """Charge and refund swaps; one instance per worker."""

    def __init__(self, db: Database, provider: SandboxProvider) -> None:
        self.db = db
        self.provider = provider

    @activity.defn(name="charge_swap")
    async def charge(self, charge: ChargeInput) -> PaymentResult:
        """Capture the swap's price and post it to deferred revenue until the swap completes. A lost
        answer (timeout) fails this attempt; the retry first asks the provider what happened."""
        key = charge_key(charge.order_id)
        payment: ProviderPayment | None = await self.provider.find_payment(key)
        if payment is None:
            payment = await self.provider.charge(idempotency_key=key, amount_minor=charge.amount_minor,
                                                 currency=charge.currency)
        if payment.status != "captured":
            raise ApplicationError("payment_declined", type=PAYMENT_DECLINED, non_retryable=True)
        async with self.db.transaction() as session:
            await post_transaction(
                session, key=key, kind="swap_charge", currency=payment.currency, order_id=charge.order_id,
                memo=f"{PROVIDER} payment {payment.payment_id}",
                postings=[Posting(provider_clearing(PROVIDER), payment.amount_minor),
                          Posting(DEFERRED_REVENUE, -payment.amount_minor)],
            )
            order = await session.get(SwapOrder, charge.order_id)
            if order is not None and order.payment_ref is None:
                order.payment_ref = payment.payment_id
                order.stage = SwapStage.PAID
                order.steps = [*order.steps, {"step": "charge", "outcome": "ok", "detail": payment.payment_id}]
        return PaymentResult(payment_ref=payment.payment_id, amount_minor=payment.amount_minor)

    @activity.defn(name="refund_swap")
    async def refund(self, refund: RefundInput) -> RefundResult:
        """Refund whatever the swap's charge captured, if anything; the key makes it happen once."""
        payment = await self.provider.find_payment(charge_key(refund.order_id))
        if payment is None or payment.status != "captured":
            return RefundResult(refund_ref=None, amount_minor=0)
        key = refund_key(refund.order_id)
        result = await self.provider.refund(idempotency_key=key, payment_id=payment.payment_id,
                                            amount_minor=payment.amount_minor)
        async with self.db.transaction() as session:
            await post_transaction(
                session, key=key, kind="swap_refund", currency=payment.currency, order_id=refund.order_id,
                memo=f"{PROVIDER} refund {result.refund_id}: {refund.reason}",
                postings=[Posting(DEFERRED_REVENUE, result.amount_minor),
                          Posting(provider_clearing(PROVIDER), -result.amount_minor)],
            )
            order = await session.get(SwapOrder, refund.order_id)
            if order is not None:
                order.refund_ref = result.refund_id
        return RefundResult(refund_ref=result.refund_id, amount_minor=result.amount_minor)
