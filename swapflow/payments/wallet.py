"""The wallet provider: a rider's prepaid balance, kept in our own database. Top-ups credit it, a charge
debits it (declined when the balance is short), a refund credits the charge back. Every movement is a
`WalletEntry` under its key, so the same key never moves money twice, and the balance changes in the
same transaction as its entry."""

from __future__ import annotations

import uuid
from datetime import date

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.engine import Database
from swapflow.db.models import Wallet, WalletEntry, as_utc
from swapflow.ledger import Posting, post_transaction, provider_clearing, wallet_account
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

TOPUP_CLEARING = provider_clearing("wallet_topups")
"""Where top-up money is until it settles (the channel a rider tops up through)."""


def _payment(entry: WalletEntry) -> ProviderPayment:
    return ProviderPayment(provider=PaymentMethod.WALLET, key=entry.key, payment_id=entry.id,
                           status=PaymentStatus.CAPTURED, amount_minor=-entry.amount_minor, currency=entry.currency)


def _refund(entry: WalletEntry, payment_id: str) -> ProviderRefund:
    return ProviderRefund(provider=PaymentMethod.WALLET, key=entry.key, refund_id=entry.id, payment_id=payment_id,
                          status=RefundStatus.SUCCEEDED, amount_minor=entry.amount_minor,
                          created_at=as_utc(entry.at), succeeded_at=as_utc(entry.at))


def topup_ledger_key(rider_id: str, idempotency_key: str) -> str:
    """Ledger and wallet-entry key of a rider's top-up."""
    return f"wallet:{rider_id}:topup:{idempotency_key}"


async def top_up(session: AsyncSession, *, rider_id: str, idempotency_key: str, amount_minor: int,
                 currency: str) -> tuple[Wallet, WalletEntry, bool]:
    """Credit a rider's wallet once per idempotency key, with its ledger entry, in the caller's transaction.
    Returns (wallet, entry, created)."""
    key = topup_ledger_key(rider_id, idempotency_key)
    wallet = await session.get(Wallet, rider_id)
    if wallet is None:
        wallet = Wallet(rider_id=rider_id, currency=currency, balance_minor=0)
        session.add(wallet)
    existing = await session.scalar(select(WalletEntry).where(WalletEntry.key == key))
    if existing is not None:
        return wallet, existing, False
    if wallet.currency != currency:
        raise ProviderDeclined(f"wallet holds {wallet.currency}, not {currency}")
    entry = WalletEntry(id=f"wal_{uuid.uuid4().hex[:20]}", key=key, rider_id=rider_id, kind="topup",
                        amount_minor=amount_minor, currency=currency)
    session.add(entry)
    wallet.balance_minor += amount_minor
    await post_transaction(session, key=key, kind="wallet_topup", currency=currency, memo=f"top-up {entry.id}",
                           postings=[Posting(TOPUP_CLEARING, amount_minor),
                                     Posting(wallet_account(rider_id), -amount_minor)])
    return wallet, entry, True


class WalletProvider:
    """Pays from the rider's prepaid balance (PaymentProvider)."""

    method = PaymentMethod.WALLET

    def __init__(self, db: Database) -> None:
        self.db = db

    async def charge(self, request: ChargeRequest) -> ProviderPayment:
        """Debit the wallet; a short balance is declined."""
        async with self.db.transaction() as session:
            entry = await session.scalar(select(WalletEntry).where(WalletEntry.key == request.key))
            if entry is not None:
                return _payment(entry)
            wallet = await session.get(Wallet, request.rider_id)
            if wallet is None or wallet.currency != request.currency:
                raise ProviderDeclined("no_wallet")
            if wallet.balance_minor < request.amount_minor:
                raise ProviderDeclined("insufficient_balance")
            wallet.balance_minor -= request.amount_minor
            entry = WalletEntry(id=f"wal_{uuid.uuid4().hex[:20]}", key=request.key, rider_id=request.rider_id,
                                kind="charge", amount_minor=-request.amount_minor, currency=request.currency)
            session.add(entry)
        return _payment(entry)

    async def find_payment(self, key: str) -> ProviderPayment | None:
        """The charge under `key`, if it happened."""
        async with self.db.sessions() as session:
            entry = await session.scalar(select(WalletEntry).where(WalletEntry.key == key,
                                                                   WalletEntry.kind == "charge"))
        return None if entry is None else _payment(entry)

    async def capture(self, key: str) -> ProviderPayment:
        """Wallet charges capture at once."""
        payment = await self.find_payment(key)
        if payment is None:
            raise ProviderDeclined(f"wallet: nothing to capture under {key}")
        return payment

    async def close(self, key: str) -> ProviderPayment:
        """Nothing is ever left open in a wallet: a captured charge is refunded, not closed."""
        raise ProviderDeclined(f"wallet: {key} cannot be closed")

    async def refund(self, request: RefundRequest) -> ProviderRefund:
        """Credit (part of) a charge back, once per key, never more than the charge."""
        async with self.db.transaction() as session:
            existing = await session.scalar(select(WalletEntry).where(WalletEntry.key == request.key))
            if existing is not None:
                return _refund(existing, request.payment.payment_id)
            charge = await session.get(WalletEntry, request.payment.payment_id)
            if charge is None or charge.kind != "charge":
                raise ProviderDeclined(f"wallet: no charge {request.payment.payment_id}")
            refunded = await session.scalar(select(func.coalesce(func.sum(WalletEntry.amount_minor), 0)).where(
                WalletEntry.kind == "refund", WalletEntry.payment_key == charge.key)) or 0
            if refunded + request.amount_minor > -charge.amount_minor:
                raise RefundExceedsCapture(f"refund {request.amount_minor} exceeds the "
                                           f"{-charge.amount_minor - refunded} left")
            wallet = await session.get(Wallet, charge.rider_id)
            assert wallet is not None
            wallet.balance_minor += request.amount_minor
            entry = WalletEntry(id=f"wal_{uuid.uuid4().hex[:20]}", key=request.key, rider_id=charge.rider_id,
                                kind="refund", amount_minor=request.amount_minor, currency=charge.currency,
                                payment_key=charge.key)
            session.add(entry)
        return _refund(entry, charge.id)

    async def find_refund(self, key: str) -> ProviderRefund | None:
        """The refund under `key`, if it happened (wallet refunds succeed at once)."""
        async with self.db.sessions() as session:
            entry = await session.scalar(select(WalletEntry).where(WalletEntry.key == key,
                                                                   WalletEntry.kind == "refund"))
            if entry is None:
                return None
            charge = await session.scalar(select(WalletEntry).where(WalletEntry.key == entry.payment_key))
        return _refund(entry, charge.id if charge else "")

    async def statement(self, day: date) -> list[StatementLine]:
        """Charges and refunds of `day` (top-ups are not swap payments)."""
        start, end = day_bounds(day)
        async with self.db.sessions() as session:
            entries = (await session.scalars(select(WalletEntry).where(
                WalletEntry.kind.in_(("charge", "refund")), WalletEntry.at >= start, WalletEntry.at < end))).all()
        return [StatementLine(kind=e.kind, key=e.key, provider_ref=e.id, amount_minor=-e.amount_minor,
                              currency=e.currency, at=as_utc(e.at)) for e in entries]
