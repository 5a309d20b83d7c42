"""Money into a rider's wallet, two ways and no other:

- a top-up is a payment: opened here as a `wallet_top_ups` row and our `payments` record
  (`topup:<id>:charge`), collected through the rider's provider by workflow `topup/<id>`, and credited
  only once the provider confirms the capture (`credit_top_up`);
- a goodwill credit is finance's, with a reason and its approver, booked to its own ledger account.
"""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.money import GoodwillCredit, Payment, Wallet, WalletEntry, WalletTopUp
from swapflow.domain.clock import utcnow
from swapflow.payments.ledger import GOODWILL, provider_clearing
from swapflow.payments.provider import PaymentStatus
from swapflow.payments.registry import paying_in_method
from swapflow.payments.wallet import credit_wallet


class TopUpState:
    PENDING = "pending"  # collecting: not credited
    SUCCEEDED = "succeeded"  # the provider captured it: credited
    FAILED = "failed"  # nothing was taken (declined, abandoned, voided): nothing credited


def top_up_payment_key(top_up_id: str) -> str:
    """Our payment key of a top-up, the provider's idempotency key."""
    return f"topup:{top_up_id}:charge"


def goodwill_source(credit_id: str) -> str:
    """What a goodwill credit's wallet entry names as its source."""
    return f"goodwill:{credit_id}"


class TopUpRefused(ValueError):
    """A top-up or credit that must not be opened (the wallet holds another currency)."""


async def _check_currency(session: AsyncSession, rider_id: str, currency: str) -> None:
    wallet = await session.get(Wallet, rider_id)
    if wallet is not None and wallet.currency != currency:
        raise TopUpRefused(f"the wallet holds {wallet.currency}, not {currency}")


async def open_top_up(
    session: AsyncSession, *, rider_id: str, idempotency_key: str, amount_minor: int, currency: str
) -> WalletTopUp:
    """A new top-up under the rider's `idempotency_key` (unique), pending, nothing credited, with our
    payment record for the provider."""
    await _check_currency(session, rider_id, currency)
    # Paid from outside the wallet: a rider paying swaps by wallet or plan tops up by another method.
    how = await paying_in_method(session, rider_id)
    method, payer = how.method, how.payer
    top_up_id = f"top_{uuid.uuid4().hex[:20]}"
    top_up = WalletTopUp(
        id=top_up_id,
        rider_id=rider_id,
        idempotency_key=idempotency_key,
        method=method,
        amount_minor=amount_minor,
        currency=currency,
        payment_key=top_up_payment_key(top_up_id),
        status=TopUpState.PENDING,
    )
    session.add(top_up)
    session.add(
        Payment(
            key=top_up.payment_key,
            order_id=None,
            rider_id=rider_id,
            method=method,
            amount_minor=amount_minor,
            currency=currency,
            status="initiated",
            payer=payer,
        )
    )
    await session.flush()
    return top_up


async def credit_top_up(session: AsyncSession, top_up: WalletTopUp, payment: Payment) -> WalletEntry:
    """Credit what the provider captured for the top-up (once), from the provider's clearing account."""
    if payment.status != PaymentStatus.CAPTURED:
        raise RuntimeError(f"top-up {top_up.id}: payment {payment.key} is {payment.status}, not captured")
    entry, _ = await credit_wallet(
        session,
        rider_id=top_up.rider_id,
        key=payment.key,  # the ledger books a payment under its key, which reconciliation looks it up by
        kind="topup",
        amount_minor=payment.amount_minor,
        currency=payment.currency,
        source=payment.key,
        debit_account=provider_clearing(payment.method),
        memo=f"top-up {top_up.id}, {payment.method} {payment.provider_ref}",
    )
    top_up.status, top_up.settled_at = TopUpState.SUCCEEDED, utcnow()
    return entry


async def grant_goodwill(
    session: AsyncSession,
    *,
    rider_id: str,
    idempotency_key: str,
    amount_minor: int,
    currency: str,
    reason: str,
    approved_by: str,
) -> GoodwillCredit:
    """Credit the rider's wallet without a payment, from the goodwill account, under the rider's
    `idempotency_key` (unique)."""
    await _check_currency(session, rider_id, currency)
    credit = GoodwillCredit(
        id=f"gw_{uuid.uuid4().hex[:20]}",
        rider_id=rider_id,
        idempotency_key=idempotency_key,
        amount_minor=amount_minor,
        currency=currency,
        reason=reason,
        approved_by=approved_by,
    )
    session.add(credit)
    await credit_wallet(
        session,
        rider_id=rider_id,
        key=f"wallet:{rider_id}:goodwill:{credit.id}",
        kind="goodwill",
        amount_minor=amount_minor,
        currency=currency,
        source=goodwill_source(credit.id),
        debit_account=GOODWILL,
        memo=f"goodwill {credit.id} by {approved_by}: {reason}"[:200],
    )
    return credit
