"""Refunds as our database keeps them: opening one (never more than what is left of the capture, one
per business id), the keys of its submissions, when the rider can expect the money, and the ledger
accounts a method's money sits in."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.money import Payment, Refund
from swapflow.db.swaps import SwapOrder
from swapflow.domain.refunds import (
    RefundOrigin as RefundOrigin,
)
from swapflow.domain.refunds import (
    RefundState as RefundState,
)
from swapflow.domain.refunds import (
    swap_refund_id as swap_refund_id,
)
from swapflow.domain.swaps import SwapStatus
from swapflow.payments.commissions import reverse_swap_accruals
from swapflow.payments.ledger import (
    DEFERRED_REVENUE,
    REFUNDED_REVENUE,
    REFUNDS_PAYABLE,
    Posting,
    post_transaction,
    provider_clearing,
    subscription_account,
    wallet_account,
)
from swapflow.payments.provider import PaymentMethod, PaymentStatus, refund_submission_key

OPEN_STATES = (RefundState.REQUESTED, RefundState.PROCESSING)


def charge_key(order_id: str) -> str:
    """Idempotency key of a swap's charge."""
    return f"swap:{order_id}:charge"


def method_account(method: str, rider_id: str) -> str:
    """The ledger account a method's money for a rider sits in: the rider's wallet or subscription, or
    the provider's clearing account."""
    if method == PaymentMethod.WALLET:
        return wallet_account(rider_id)
    if method == PaymentMethod.SUBSCRIPTION:
        return subscription_account(rider_id)
    return provider_clearing(method)


def settled_key(refund_id: str) -> str:
    """The ledger transaction that clears a refund from refunds payable: once, however it landed."""
    return f"refund:{refund_id}:settled"


async def book_refund_owed(session: AsyncSession, refund: Refund) -> None:
    """The refund is owed to the rider (debit deferred revenue for a failed swap, contra-revenue
    otherwise; credit refunds payable): from its first accepted submission on, or when finance resolves
    one no provider ever accepted. Once per refund. A completed swap's refund also reverses the swap's
    commissions (`payments/commissions.py`)."""
    order = await session.get(SwapOrder, refund.order_id) if refund.order_id else None
    compensation = refund.origin == RefundOrigin.SWAP_COMPENSATION
    from_deferred = order is not None and order.status != SwapStatus.COMPLETED
    await post_transaction(
        session,
        key=f"refund:{refund.id}",
        kind="swap_refund" if compensation else "refund",
        currency=refund.currency,
        order_id=refund.order_id,
        memo=f"{refund.origin}: {refund.reason}"[:200],
        postings=[
            Posting(DEFERRED_REVENUE if from_deferred else REFUNDED_REVENUE, refund.amount_minor),
            Posting(REFUNDS_PAYABLE, -refund.amount_minor),
        ],
    )
    if order is not None and order.status == SwapStatus.COMPLETED:
        await reverse_swap_accruals(session, order.id, refund.id)


def add_business_days(start: datetime, days: int) -> datetime:
    """`days` business days (Mon-Fri) after `start`: when a bank-card refund is due at the latest."""
    at = start
    while days > 0:
        at += timedelta(days=1)
        if at.weekday() < 5:
            days -= 1
    return at


class RefundRefused(ValueError):
    """A refund that must not be opened (nothing captured, more than what is left)."""


async def refundable_minor(session: AsyncSession, payment: Payment, *, excluding: str | None = None) -> int:
    """What is left of a capture once the refunds opened against it are taken off."""
    taken = (
        await session.scalar(
            select(func.coalesce(func.sum(Refund.amount_minor), 0)).where(
                Refund.payment_key == payment.key, Refund.id != (excluding or "")
            )
        )
        or 0
    )
    return payment.amount_minor - int(taken)


async def open_refund(
    session: AsyncSession,
    *,
    refund_id: str,
    payment: Payment,
    amount_minor: int | None,
    reason: str,
    origin: RefundOrigin,
) -> tuple[Refund, bool]:
    """The refund `refund_id`, opened now if new: of `amount_minor` (None: all that is left), never more
    than what is left of the capture. The same id returns the refund it already opened. Returns (refund,
    whether it was opened now)."""
    await session.refresh(payment, with_for_update=True)  # two refunds of one capture never both fit
    # Looked up under the lock: the same refund opened concurrently is this one, not a second.
    existing = await session.scalar(select(Refund).where(Refund.id == refund_id))
    if existing is not None:
        return existing, False
    if payment.status != PaymentStatus.CAPTURED:
        raise RefundRefused(f"payment {payment.key} is {payment.status}: nothing to refund")
    left = await refundable_minor(session, payment)
    amount = left if amount_minor is None else amount_minor
    if amount <= 0 or amount > left:
        raise RefundRefused(f"refund of {amount} {payment.currency} asked; {left} left of the capture")
    refund = Refund(
        id=refund_id,
        key=refund_submission_key(refund_id, 1),
        payment_key=payment.key,
        order_id=payment.order_id,
        rider_id=payment.rider_id,
        method=payment.method,
        amount_minor=amount,
        currency=payment.currency,
        reason=reason,
        origin=origin,
        status=RefundState.REQUESTED,
        attempt=1,
        escalated=False,
    )
    session.add(refund)
    await session.flush()
    return refund, True
