"""The subscription provider: a plan of N swaps per period, kept in our own database. A charge takes one
swap of the current period (declined once the allowance is used up), a refund gives that swap back.

What a swap costs on a plan: its per-swap value, `plan.price_minor // plan.swaps_per_period`, not 0.
The plan's price was paid up front into the rider's subscription account (a liability: swaps owed);
each swap moves its value from there to revenue like any other charge, so revenue per swap, refunds
and reconciliation read the same whatever the rider pays with.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.engine import Database
from swapflow.db.money import Subscription, SubscriptionPlan, SubscriptionUse
from swapflow.domain.checks import present
from swapflow.domain.clock import as_utc, utcnow
from swapflow.payments.ledger import Posting, post_transaction, provider_clearing, subscription_account
from swapflow.payments.provider import (
    ChargeRequest,
    PaymentMethod,
    PaymentStatus,
    ProviderDeclined,
    ProviderPayment,
    ProviderRefund,
    RefundExceedsCapture,
    RefundRequest,
    RefundStatus,
    StatementLine,
    day_bounds,
)

SALES_CLEARING = provider_clearing("subscription_sales")


def per_swap_minor(plan: SubscriptionPlan) -> int:
    """What one swap of the plan is worth."""
    return plan.price_minor // plan.swaps_per_period


def period_start(subscription: Subscription, plan: SubscriptionPlan, now: datetime) -> datetime:
    """The start of the period `now` falls in."""
    started = as_utc(subscription.started_at)
    length = timedelta(days=plan.period_days)
    return started + length * max(0, (now - started) // length)


async def swaps_used(session: AsyncSession, rider_id: str, start: datetime) -> int:
    """The swaps the rider has used (and not been given back) in the period starting at `start`."""
    used = await session.scalar(
        select(func.count())
        .select_from(SubscriptionUse)
        .where(
            SubscriptionUse.rider_id == rider_id,
            SubscriptionUse.period_start == start,
            SubscriptionUse.returned_at.is_(None),
        )
    )
    return int(used or 0)


async def subscribe(
    session: AsyncSession, *, rider_id: str, plan: SubscriptionPlan, started_at: datetime | None = None
) -> Subscription:
    """Put a rider on a plan, booking its price as swaps owed to the rider (the sale)."""
    subscription = Subscription(rider_id=rider_id, plan_id=plan.id, started_at=started_at or utcnow(), active=True)
    session.add(subscription)
    await post_transaction(
        session,
        key=f"subscription:{rider_id}:{plan.id}:sale",
        kind="subscription_sale",
        currency=plan.currency,
        memo=f"plan {plan.id}",
        postings=[
            Posting(SALES_CLEARING, plan.price_minor),
            Posting(subscription_account(rider_id), -plan.price_minor),
        ],
    )
    return subscription


def _payment(use: SubscriptionUse) -> ProviderPayment:
    return ProviderPayment(
        provider=PaymentMethod.SUBSCRIPTION,
        key=use.key,
        payment_id=use.id,
        status=PaymentStatus.CAPTURED,
        amount_minor=use.amount_minor,
        currency=use.currency,
        refunded_minor=use.amount_minor if use.returned_at else 0,
    )


def _refund(use: SubscriptionUse) -> ProviderRefund:
    if use.refund_key is None or use.returned_at is None:
        raise ValueError(f"subscription use {use.id} was not given back")
    return ProviderRefund(
        provider=PaymentMethod.SUBSCRIPTION,
        key=use.refund_key,
        refund_id=f"{use.id}-back",
        payment_id=use.id,
        status=RefundStatus.SUCCEEDED,
        amount_minor=use.amount_minor,
        created_at=as_utc(use.returned_at),
        succeeded_at=as_utc(use.returned_at),
    )


class SubscriptionProvider:
    """Pays with one swap of the rider's plan (PaymentProvider)."""

    method = PaymentMethod.SUBSCRIPTION

    def __init__(self, db: Database) -> None:
        self.db = db

    async def charge(self, request: ChargeRequest) -> ProviderPayment:
        """Use one swap of the current period; over the allowance is declined."""
        async with self.db.transaction() as session:
            use = await session.scalar(select(SubscriptionUse).where(SubscriptionUse.key == request.key))
            if use is not None:
                return _payment(use)
            # Locked: concurrent uses of one plan count the period's uses one after the other.
            subscription = await session.get(Subscription, request.rider_id, with_for_update=True)
            if subscription is None or not subscription.active:
                raise ProviderDeclined("no_subscription")
            now = utcnow()
            if subscription.paid_until is not None and now >= as_utc(subscription.paid_until):
                raise ProviderDeclined("subscription_expired")
            plan = present(await session.get(SubscriptionPlan, subscription.plan_id), f"plan {subscription.plan_id}")
            start = period_start(subscription, plan, now)
            if await swaps_used(session, request.rider_id, start) >= plan.swaps_per_period:
                raise ProviderDeclined("subscription_allowance_used")
            use = SubscriptionUse(
                id=f"sub_{uuid.uuid4().hex[:20]}",
                key=request.key,
                rider_id=request.rider_id,
                period_start=start,
                amount_minor=per_swap_minor(plan),
                currency=plan.currency,
            )
            session.add(use)
        return _payment(use)

    async def find_payment(self, key: str) -> ProviderPayment | None:
        """The swap used under `key`, if any."""
        async with self.db.sessions() as session:
            use = await session.scalar(select(SubscriptionUse).where(SubscriptionUse.key == key))
        return None if use is None else _payment(use)

    async def capture(self, key: str) -> ProviderPayment:
        """Subscription charges capture at once."""
        payment = await self.find_payment(key)
        if payment is None:
            raise ProviderDeclined(f"subscription: nothing to capture under {key}")
        return payment

    async def close(self, key: str) -> ProviderPayment:
        """Nothing is ever left open: a used swap is given back by a refund."""
        raise ProviderDeclined(f"subscription: {key} cannot be closed")

    async def refund(self, request: RefundRequest) -> ProviderRefund:
        """Give the swap back to its period, once; only the whole swap can be given back."""
        async with self.db.transaction() as session:
            use = await session.get(SubscriptionUse, request.payment.payment_id, with_for_update=True)
            if use is None:
                raise ProviderDeclined(f"subscription: no use {request.payment.payment_id}")
            if use.refund_key == request.key:
                return _refund(use)
            if use.refund_key is not None or request.amount_minor > use.amount_minor:
                raise RefundExceedsCapture(f"swap {use.id} was already given back or is worth less")
            use.refund_key, use.returned_at = request.key, utcnow()
        return _refund(use)

    async def find_refund(self, key: str) -> ProviderRefund | None:
        """The given-back swap under `key`, if any."""
        async with self.db.sessions() as session:
            use = await session.scalar(select(SubscriptionUse).where(SubscriptionUse.refund_key == key))
        return None if use is None else _refund(use)

    async def statement(self, day: date) -> list[StatementLine]:
        """Swaps used and given back on `day`, at their per-swap value."""
        start, end = day_bounds(day)
        async with self.db.sessions() as session:
            used = (
                await session.scalars(
                    select(SubscriptionUse).where(SubscriptionUse.at >= start, SubscriptionUse.at < end)
                )
            ).all()
            back = (
                await session.scalars(
                    select(SubscriptionUse).where(
                        SubscriptionUse.returned_at >= start, SubscriptionUse.returned_at < end
                    )
                )
            ).all()
        lines = [
            StatementLine(
                kind="charge",
                key=u.key,
                provider_ref=u.id,
                amount_minor=u.amount_minor,
                currency=u.currency,
                at=as_utc(u.at),
            )
            for u in used
        ]
        lines += [
            StatementLine(
                kind="refund",
                key=u.refund_key,
                provider_ref=f"{u.id}-back",
                amount_minor=-u.amount_minor,
                currency=u.currency,
                at=as_utc(u.returned_at),
            )
            for u in back
            if u.returned_at is not None
        ]
        return lines
