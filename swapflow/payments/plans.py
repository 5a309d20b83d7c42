"""A rider buying a plan: a period of it paid like a top-up, through the rider's outside provider
(`registry.paying_in_method`), under our payment record `plan_purchase:<id>:charge`, collected by workflow
`plan_purchase/<id>`. Only once the provider confirms the capture is the plan's price booked as swaps
owed to the rider (debit the provider's clearing account, credit `subscription:<rider>`, under the
payment's key as every capture is) and the subscription started or extended by a period; the plan then
becomes the rider's default payment method, so their swaps are taken from it."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.money import Payment, PlanPurchase, Subscription, SubscriptionPlan
from swapflow.domain.checks import present
from swapflow.domain.clock import as_utc, utcnow
from swapflow.payments.ledger import Posting, post_transaction, provider_clearing, subscription_account
from swapflow.payments.methods import add_method, lock_rider
from swapflow.payments.provider import PaymentMethod, PaymentStatus
from swapflow.payments.registry import paying_in_method


class PurchaseState:
    PENDING = "pending"  # collecting: no plan yet
    SUCCEEDED = "succeeded"  # the provider captured it: the plan runs
    FAILED = "failed"  # nothing was taken: no plan


def plan_purchase_payment_key(purchase_id: str) -> str:
    """Our payment key of a plan purchase, the provider's idempotency key."""
    return f"plan_purchase:{purchase_id}:charge"


async def open_plan_purchase(
    session: AsyncSession, *, rider_id: str, idempotency_key: str, plan: SubscriptionPlan
) -> PlanPurchase:
    """A new purchase of one period of `plan`, pending, with our payment record for the provider."""
    how = await paying_in_method(session, rider_id)
    purchase_id = f"plp_{uuid.uuid4().hex[:20]}"
    purchase = PlanPurchase(
        id=purchase_id,
        rider_id=rider_id,
        idempotency_key=idempotency_key,
        plan_id=plan.id,
        method=how.method,
        amount_minor=plan.price_minor,
        currency=plan.currency,
        payment_key=plan_purchase_payment_key(purchase_id),
        status=PurchaseState.PENDING,
    )
    session.add(purchase)
    session.add(
        Payment(
            key=purchase.payment_key,
            order_id=None,
            rider_id=rider_id,
            method=how.method,
            amount_minor=plan.price_minor,
            currency=plan.currency,
            status="initiated",
            payer=how.payer,
        )
    )
    await session.flush()
    return purchase


async def activate_plan(session: AsyncSession, purchase: PlanPurchase, payment: Payment) -> Subscription:
    """What the provider captured for the purchase, booked once, and the plan running: extended by a period
    if the rider's paid period of the same plan is still running, else started now. Call with the rider
    and the purchase locked."""
    if payment.status != PaymentStatus.CAPTURED:
        raise RuntimeError(f"plan purchase {purchase.id}: payment {payment.key} is {payment.status}, not captured")
    plan = present(await session.get(SubscriptionPlan, purchase.plan_id), f"plan {purchase.plan_id}")
    await post_transaction(
        session,
        key=payment.key,  # the ledger books a capture under its payment's key, which reconciliation reads
        kind="subscription_sale",
        currency=payment.currency,
        memo=f"plan {plan.id}, purchase {purchase.id}, {payment.method} {payment.provider_ref}"[:200],
        postings=[
            Posting(provider_clearing(payment.method), payment.amount_minor),
            Posting(subscription_account(purchase.rider_id), -payment.amount_minor),
        ],
    )
    now, period = utcnow(), timedelta(days=plan.period_days)
    subscription = await session.get(Subscription, purchase.rider_id, with_for_update=True)
    if subscription is None:
        subscription = Subscription(rider_id=purchase.rider_id, plan_id=plan.id, started_at=now, active=True)
        session.add(subscription)
    paid_until = as_utc(subscription.paid_until) if subscription.paid_until is not None else None
    if subscription.active and subscription.plan_id == plan.id and paid_until is not None and paid_until > now:
        subscription.paid_until = paid_until + period  # the next period of the running plan
    else:
        subscription.plan_id, subscription.started_at, subscription.active = plan.id, now, True
        subscription.paid_until = now + period
    method, _ = await add_method(
        session, rider_id=purchase.rider_id, method=PaymentMethod.SUBSCRIPTION, label=plan.name[:80], default=True
    )
    method.label = plan.name[:80]
    purchase.status, purchase.settled_at = PurchaseState.SUCCEEDED, now
    return subscription


async def lock_purchase(session: AsyncSession, purchase_id: str) -> PlanPurchase | None:
    """The purchase, locked after its rider (the order every change of a rider's methods locks in)."""
    purchase = await session.get(PlanPurchase, purchase_id)
    if purchase is None:
        return None
    await lock_rider(session, purchase.rider_id)
    return await session.get(PlanPurchase, purchase_id, with_for_update=True, populate_existing=True)
