"""The sandbox payment provider: the embedded default. It keeps real state in its own tables, committed
in its own transactions as a real provider keeps it on its side, honours idempotency keys the way
WeChat Pay and Stripe do, and can decline or lose its answer at configured rates to exercise faults.

Refunds behave like WeChat's to a bank card: they stay PROCESSING for `refund_processing_s` before
they succeed, and `settle_refund` ends one in any final state (what the bank does to a real one), so
the refund workflow really has something to follow.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import date, timedelta

from sqlalchemy import select

from swapflow.db.engine import Database
from swapflow.db.money import SandboxPayment, SandboxRefund
from swapflow.domain.checks import present
from swapflow.domain.clock import as_utc, utcnow
from swapflow.payments.provider import (
    ChargeRequest,
    PaymentMethod,
    PaymentStatus,
    ProviderDeclined,
    ProviderPayment,
    ProviderRefund,
    ProviderTimeout,
    RefundExceedsCapture,
    RefundRequest,
    RefundStatus,
    StatementLine,
    day_bounds,
)

PROVIDER = PaymentMethod.SANDBOX.value

# A closed or failed refund never moved money: what it held of the capture is free again.
_RELEASING = frozenset({RefundStatus.CLOSED, RefundStatus.FAILED})


def _payment(row: SandboxPayment) -> ProviderPayment:
    return ProviderPayment(
        provider=PaymentMethod.SANDBOX,
        key=row.idempotency_key,
        payment_id=row.id,
        status=PaymentStatus(row.status),
        amount_minor=row.amount_minor,
        currency=row.currency,
        refunded_minor=row.refunded_minor,
    )


def _refund(row: SandboxRefund, payment: SandboxPayment) -> ProviderRefund:
    return ProviderRefund(
        provider=PaymentMethod.SANDBOX,
        key=row.idempotency_key,
        refund_id=row.id,
        payment_id=payment.id,
        status=RefundStatus(row.status),
        amount_minor=row.amount_minor,
        created_at=as_utc(row.created_at),
        succeeded_at=as_utc(row.final_at) if row.final_at and row.status == "succeeded" else None,
    )


class SandboxProvider:
    """Charges and refunds against the sandbox tables (PaymentProvider)."""

    method = PaymentMethod.SANDBOX

    def __init__(
        self,
        db: Database,
        *,
        latency_ms: int = 0,
        decline_rate: float = 0.0,
        timeout_rate: float = 0.0,
        refund_processing_s: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        self.db = db
        self.latency_ms = latency_ms
        self.decline_rate = decline_rate
        self.timeout_rate = timeout_rate
        self.refund_processing_s = refund_processing_s
        self.rng = rng or random.Random()

    async def _latency(self) -> None:
        if self.latency_ms:
            await asyncio.sleep(self.latency_ms / 1000)

    async def charge(self, request: ChargeRequest) -> ProviderPayment:
        """Capture the amount (or decline). The same key returns the first answer instead of charging
        again. May raise ProviderTimeout after the capture happened, as a real provider's lost answer."""
        await self._latency()
        declined = self.rng.random() < self.decline_rate
        async with self.db.transaction() as session:
            row = await session.scalar(select(SandboxPayment).where(SandboxPayment.idempotency_key == request.key))
            if row is None:
                row = SandboxPayment(
                    id=f"sbx_pay_{uuid.uuid4().hex[:20]}",
                    idempotency_key=request.key,
                    amount_minor=request.amount_minor,
                    currency=request.currency,
                    status=PaymentStatus.DECLINED if declined else PaymentStatus.CAPTURED,
                )
                session.add(row)
        if self.rng.random() < self.timeout_rate:
            raise ProviderTimeout(f"sandbox: no answer for {request.key}")
        payment = _payment(row)
        if payment.status == PaymentStatus.DECLINED:
            raise ProviderDeclined("card_declined")
        return payment

    async def find_payment(self, key: str) -> ProviderPayment | None:
        """The payment made under a key, if any: how a timed-out charge is resolved."""
        async with self.db.sessions() as session:
            row = await session.scalar(select(SandboxPayment).where(SandboxPayment.idempotency_key == key))
        return None if row is None else _payment(row)

    async def capture(self, key: str) -> ProviderPayment:
        """Sandbox charges capture at once: this answers the captured payment."""
        payment = await self.find_payment(key)
        if payment is None or payment.status != PaymentStatus.CAPTURED:
            raise ProviderDeclined(f"sandbox: nothing to capture under {key}")
        return payment

    async def close(self, key: str) -> ProviderPayment:
        """Close a payment that was never captured; a captured one is refunded instead, not closed."""
        async with self.db.transaction() as session:
            row = await session.scalar(select(SandboxPayment).where(SandboxPayment.idempotency_key == key))
            if row is None:
                raise ProviderDeclined(f"sandbox: no payment under {key}")
            if row.status != PaymentStatus.CAPTURED:
                row.status = PaymentStatus.CLOSED
        return _payment(row)

    async def refund(self, request: RefundRequest) -> ProviderRefund:
        """Refund part or all of a capture, once per key; never more than what is left of it."""
        await self._latency()
        async with self.db.transaction() as session:
            # Locked first: refunds of one capture are checked and taken one after the other.
            payment = await session.get(SandboxPayment, request.payment.payment_id, with_for_update=True)
            if payment is None or payment.status != PaymentStatus.CAPTURED:
                raise ProviderDeclined(f"sandbox: no captured payment {request.payment.payment_id}")
            existing = await session.scalar(select(SandboxRefund).where(SandboxRefund.idempotency_key == request.key))
            if existing is not None:
                return _refund(existing, payment)
            if payment.refunded_minor + request.amount_minor > payment.amount_minor:
                raise RefundExceedsCapture(
                    f"refund {request.amount_minor} exceeds the {payment.amount_minor - payment.refunded_minor} left"
                )
            payment.refunded_minor += request.amount_minor
            now = utcnow()
            at_once = self.refund_processing_s <= 0
            row = SandboxRefund(
                id=f"sbx_re_{uuid.uuid4().hex[:20]}",
                idempotency_key=request.key,
                payment_id=payment.id,
                amount_minor=request.amount_minor,
                created_at=now,
                status=RefundStatus.SUCCEEDED if at_once else RefundStatus.PROCESSING,
                settles_at=now + timedelta(seconds=self.refund_processing_s),
                final_at=now if at_once else None,
            )
            session.add(row)
        return _refund(row, payment)

    async def find_refund(self, key: str) -> ProviderRefund | None:
        """The refund under `key`; a processing one whose time has come has succeeded by now."""
        async with self.db.transaction() as session:
            row = await session.scalar(select(SandboxRefund).where(SandboxRefund.idempotency_key == key))
            if row is None:
                return None
            payment = present(await session.get(SandboxPayment, row.payment_id), f"sandbox payment {row.payment_id}")
            if (
                row.status == RefundStatus.PROCESSING
                and row.settles_at is not None
                and as_utc(row.settles_at) <= utcnow()
            ):
                row.status, row.final_at = RefundStatus.SUCCEEDED, utcnow()
            return _refund(row, payment)

    async def settle_refund(self, key: str, status: RefundStatus) -> ProviderRefund:
        """End a processing refund in `status`, as the bank would (tests and demos drive refunds with it).
        A closed or failed refund gives its amount back to the capture."""
        async with self.db.transaction() as session:
            row = await session.scalar(select(SandboxRefund).where(SandboxRefund.idempotency_key == key))
            if row is None:
                raise LookupError(f"no sandbox refund under {key}")
            payment = present(
                await session.get(SandboxPayment, row.payment_id, with_for_update=True),
                f"sandbox payment {row.payment_id}",
            )
            await session.refresh(row)  # as it is now that no other refund of the capture moves
            if row.status == RefundStatus.PROCESSING:
                row.status, row.final_at = status, utcnow()
                if status in _RELEASING:
                    payment.refunded_minor -= row.amount_minor
            return _refund(row, payment)

    async def statement(self, day: date) -> list[StatementLine]:
        """Captures made and refunds accepted on `day`; closed and failed refunds moved no money."""
        start, end = day_bounds(day)
        async with self.db.sessions() as session:
            payments = (
                await session.scalars(
                    select(SandboxPayment).where(
                        SandboxPayment.status == PaymentStatus.CAPTURED,
                        SandboxPayment.created_at >= start,
                        SandboxPayment.created_at < end,
                    )
                )
            ).all()
            refunds = (
                await session.scalars(
                    select(SandboxRefund).where(
                        SandboxRefund.status.not_in(list(_RELEASING)),
                        SandboxRefund.created_at >= start,
                        SandboxRefund.created_at < end,
                    )
                )
            ).all()
            currencies = {p.id: p.currency for p in payments}
            for refund in refunds:
                if refund.payment_id not in currencies:
                    payment = await session.get(SandboxPayment, refund.payment_id)
                    currencies[refund.payment_id] = payment.currency if payment else ""
        lines = [
            StatementLine(
                kind="charge",
                key=p.idempotency_key,
                provider_ref=p.id,
                amount_minor=p.amount_minor,
                currency=p.currency,
                at=as_utc(p.created_at),
            )
            for p in payments
        ]
        lines += [
            StatementLine(
                kind="refund",
                key=r.idempotency_key,
                provider_ref=r.id,
                amount_minor=-r.amount_minor,
                currency=currencies[r.payment_id],
                at=as_utc(r.created_at),
            )
            for r in refunds
        ]
        return lines
