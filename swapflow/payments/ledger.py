"""Double-entry ledger: every movement of money is a balanced transaction of postings in integer minor
units. Transactions are keyed by a business key, so posting the same key twice changes nothing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.money import LedgerPosting, LedgerTransaction

DEFERRED_REVENUE = "deferred_revenue:swaps"
SWAP_REVENUE = "revenue:swaps"


def provider_clearing(provider: str) -> str:
    """The clearing account of a payment provider: money the provider holds for us."""
    return f"provider_clearing:{provider}"


REFUNDS_PAYABLE = "refunds_payable"
"""Refunds submitted and not yet landed with the rider: owed until the provider says they succeeded."""
GOODWILL = "expense:goodwill"
"""Money finance gave riders without a payment (goodwill credits to their wallets)."""
REFUNDED_REVENUE = "revenue:refunds"
"""Contra-revenue: refunds of swaps that completed (operator and complaint refunds)."""


COMMISSION_EXPENSE = "expense:commissions"
"""What partners earned on swaps (accrued with each swap's revenue; reversed when a swap is refunded)."""
BANK_CASH = "cash:bank"
"""Our bank account: bank-transfer payouts leave from it."""


def partner_payable(partner_id: str) -> str:
    """What swapflow owes a partner: accrued commissions, less clawbacks and what was paid out."""
    return f"partner_payable:{partner_id}"


def wallet_account(rider_id: str) -> str:
    """A rider's prepaid balance: a liability to the rider."""
    return f"wallet:{rider_id}"


def subscription_account(rider_id: str) -> str:
    """The swaps a rider's subscription has paid for and not yet used: a liability to the rider."""
    return f"subscription:{rider_id}"


@dataclass(frozen=True)
class Posting:
    account: str
    amount_minor: int  # debit positive, credit negative


class UnbalancedTransaction(ValueError):
    """Postings whose amounts do not sum to zero."""


async def post_transaction(
    session: AsyncSession,
    *,
    key: str,
    kind: str,
    currency: str,
    postings: Sequence[Posting],
    order_id: str | None = None,
    memo: str = "",
) -> LedgerTransaction:
    """Record a balanced transaction once. A second call with the same key returns the first."""
    if sum(p.amount_minor for p in postings) != 0:
        raise UnbalancedTransaction(f"{key}: postings sum to {sum(p.amount_minor for p in postings)}")
    existing = await session.scalar(select(LedgerTransaction).where(LedgerTransaction.key == key))
    if existing is not None:
        return existing
    transaction = LedgerTransaction(key=key, kind=kind, order_id=order_id, memo=memo)
    session.add(transaction)
    await session.flush()
    session.add_all(
        LedgerPosting(transaction_id=transaction.id, account=p.account, amount_minor=p.amount_minor, currency=currency)
        for p in postings
    )
    return transaction
