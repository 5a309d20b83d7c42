"""The wallet provider: a rider's prepaid balance, kept in our own database. Settled top-up payments and
finance's goodwill credits credit it (`credit_wallet`), a charge debits it (declined when the balance is
short), a refund credits the charge back. Every movement is a `WalletEntry` under its key, so the same
key never moves money twice, and the balance changes in the same transaction as its entry, by one
conditional UPDATE (concurrent movements of one wallet never overwrite each other)."""

from __future__ import annotations

import uuid
from datetime import date

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.engine import Database
from swapflow.db.money import Wallet, WalletEntry
from swapflow.domain.clock import as_utc
from swapflow.payments.ledger import Posting, post_transaction, wallet_account
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


def _payment(entry: WalletEntry) -> ProviderPayment:
    return ProviderPayment(
        provider=PaymentMethod.WALLET,
        key=entry.key,
        payment_id=entry.id,
        status=PaymentStatus.CAPTURED,
        amount_minor=-entry.amount_minor,
        currency=entry.currency,
    )


def _refund(entry: WalletEntry, payment_id: str) -> ProviderRefund:
    return ProviderRefund(
        provider=PaymentMethod.WALLET,
        key=entry.key,
        refund_id=entry.id,
        payment_id=payment_id,
        status=RefundStatus.SUCCEEDED,
        amount_minor=entry.amount_minor,
        created_at=as_utc(entry.at),
        succeeded_at=as_utc(entry.at),
    )


async def _ensure_wallet(session: AsyncSession, rider_id: str, currency: str) -> None:
    """The rider's wallet exists (created empty if new; a concurrent creation is no error)."""
    insert = postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    await session.execute(
        insert(Wallet)
        .values(rider_id=rider_id, currency=currency, balance_minor=0)
        .on_conflict_do_nothing(index_elements=[Wallet.rider_id])
    )


async def _add_to_balance(session: AsyncSession, rider_id: str, currency: str, amount_minor: int) -> int | None:
    """Move the balance by `amount_minor` in one conditional UPDATE, so concurrent movements never lose
    one another: a debit only if the balance covers it. The new balance, or None when the wallet is
    missing, holds another currency or is short."""
    where = [Wallet.rider_id == rider_id, Wallet.currency == currency]
    if amount_minor < 0:
        where.append(Wallet.balance_minor >= -amount_minor)
    return await session.scalar(
        update(Wallet)
        .where(*where)
        .values(balance_minor=Wallet.balance_minor + amount_minor)
        .returning(Wallet.balance_minor)
    )


async def credit_wallet(
    session: AsyncSession,
    *,
    rider_id: str,
    key: str,
    kind: str,
    amount_minor: int,
    currency: str,
    source: str,
    debit_account: str,
    memo: str,
) -> tuple[WalletEntry, bool]:
    """Credit a rider's wallet once per `key`, with its ledger entry (debit `debit_account`, where the
    money comes from), in the caller's transaction. `source` names what pays for it (a settled payment's
    key, or a goodwill credit). Returns (entry, created)."""
    existing = await session.scalar(select(WalletEntry).where(WalletEntry.key == key))
    if existing is not None:
        return existing, False
    await _ensure_wallet(session, rider_id, currency)
    if await _add_to_balance(session, rider_id, currency, amount_minor) is None:
        raise ProviderDeclined(f"wallet of {rider_id} does not hold {currency}")
    entry = WalletEntry(
        id=f"wal_{uuid.uuid4().hex[:20]}",
        key=key,
        rider_id=rider_id,
        kind=kind,
        amount_minor=amount_minor,
        currency=currency,
        payment_key=source,
    )
    session.add(entry)
    await post_transaction(
        session,
        key=key,
        kind=f"wallet_{kind}",
        currency=currency,
        memo=memo,
        postings=[Posting(debit_account, amount_minor), Posting(wallet_account(rider_id), -amount_minor)],
    )
    return entry, True


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
            if await _add_to_balance(session, request.rider_id, request.currency, -request.amount_minor) is None:
                wallet = await session.get(Wallet, request.rider_id)
                if wallet is None or wallet.currency != request.currency:
                    raise ProviderDeclined("no_wallet")
                raise ProviderDeclined("insufficient_balance")
            entry = WalletEntry(
                id=f"wal_{uuid.uuid4().hex[:20]}",
                key=request.key,
                rider_id=request.rider_id,
                kind="charge",
                amount_minor=-request.amount_minor,
                currency=request.currency,
            )
            session.add(entry)
        return _payment(entry)

    async def find_payment(self, key: str) -> ProviderPayment | None:
        """The charge under `key`, if it happened."""
        async with self.db.sessions() as session:
            entry = await session.scalar(
                select(WalletEntry).where(WalletEntry.key == key, WalletEntry.kind == "charge")
            )
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
            # Locked: two refunds of one charge are checked against the refunded sum one after the other.
            charge = await session.get(WalletEntry, request.payment.payment_id, with_for_update=True)
            if charge is None or charge.kind != "charge":
                raise ProviderDeclined(f"wallet: no charge {request.payment.payment_id}")
            refunded = (
                await session.scalar(
                    select(func.coalesce(func.sum(WalletEntry.amount_minor), 0)).where(
                        WalletEntry.kind == "refund", WalletEntry.payment_key == charge.key
                    )
                )
                or 0
            )
            if refunded + request.amount_minor > -charge.amount_minor:
                raise RefundExceedsCapture(
                    f"refund {request.amount_minor} exceeds the {-charge.amount_minor - refunded} left"
                )
            credited = await _add_to_balance(session, charge.rider_id, charge.currency, request.amount_minor)
            if credited is None:
                raise LookupError(f"wallet of rider {charge.rider_id} in {charge.currency} is missing")
            entry = WalletEntry(
                id=f"wal_{uuid.uuid4().hex[:20]}",
                key=request.key,
                rider_id=charge.rider_id,
                kind="refund",
                amount_minor=request.amount_minor,
                currency=charge.currency,
                payment_key=charge.key,
            )
            session.add(entry)
        return _refund(entry, charge.id)

    async def find_refund(self, key: str) -> ProviderRefund | None:
        """The refund under `key`, if it happened (wallet refunds succeed at once)."""
        async with self.db.sessions() as session:
            entry = await session.scalar(
                select(WalletEntry).where(WalletEntry.key == key, WalletEntry.kind == "refund")
            )
            if entry is None:
                return None
            charge = await session.scalar(select(WalletEntry).where(WalletEntry.key == entry.payment_key))
        return _refund(entry, charge.id if charge else "")

    async def statement(self, day: date) -> list[StatementLine]:
        """Charges and refunds of `day` (top-ups are not swap payments)."""
        start, end = day_bounds(day)
        async with self.db.sessions() as session:
            entries = (
                await session.scalars(
                    select(WalletEntry).where(
                        WalletEntry.kind.in_(("charge", "refund")), WalletEntry.at >= start, WalletEntry.at < end
                    )
                )
            ).all()
        return [
            StatementLine(
                kind=e.kind,
                key=e.key,
                provider_ref=e.id,
                amount_minor=-e.amount_minor,
                currency=e.currency,
                at=as_utc(e.at),
            )
            for e in entries
        ]
