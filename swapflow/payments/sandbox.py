"""The sandbox payment provider: the embedded default. It keeps real state in the database, as a real
provider keeps it on its side, and honours idempotency keys the way WeChat Pay and Stripe do."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.models import SandboxPayment, SandboxRefund

PROVIDER = "sandbox"


@dataclass(frozen=True)
class ProviderPayment:
    payment_id: str
    status: str  # captured | declined
    amount_minor: int
    refunded_minor: int


@dataclass(frozen=True)
class ProviderRefund:
    refund_id: str
    status: str  # succeeded
    amount_minor: int


class RefundExceedsCapture(ValueError):
    """A refund larger than what is left of the capture."""


class SandboxProvider:
    """Charges and refunds against the sandbox tables, inside the caller's transaction."""

    def __init__(self, latency_ms: int = 0) -> None:
        self.latency_ms = latency_ms

    async def _latency(self) -> None:
        if self.latency_ms:
            await asyncio.sleep(self.latency_ms / 1000)

    async def charge(
        self, session: AsyncSession, *, idempotency_key: str, amount_minor: int, currency: str
    ) -> ProviderPayment:
        """Capture `amount_minor`; the same key returns the same payment instead of charging again."""
        await self._latency()
        payment = await self.find_payment(session, idempotency_key)
        if payment is None:
            payment = SandboxPayment(id=f"sbx_pay_{uuid.uuid4().hex[:20]}", idempotency_key=idempotency_key,
                                     amount_minor=amount_minor, currency=currency, status="captured")
            session.add(payment)
            await session.flush()
        return ProviderPayment(payment.id, payment.status, payment.amount_minor, payment.refunded_minor)

    async def find_payment(self, session: AsyncSession, idempotency_key: str) -> SandboxPayment | None:
        """The payment made under a key, if any: how a timed-out charge is resolved."""
        return await session.scalar(
            select(SandboxPayment).where(SandboxPayment.idempotency_key == idempotency_key)
        )

    async def refund(
        self, session: AsyncSession, *, idempotency_key: str, payment_id: str, amount_minor: int
    ) -> ProviderRefund:
        """Refund part or all of a capture, once per key; never more than was captured."""
        await self._latency()
        existing = await session.scalar(
            select(SandboxRefund).where(SandboxRefund.idempotency_key == idempotency_key)
        )
        if existing is not None:
            return ProviderRefund(existing.id, existing.status, existing.amount_minor)
        payment = await session.get(SandboxPayment, payment_id)
        if payment is None:
            raise LookupError(f"no sandbox payment {payment_id}")
        if payment.refunded_minor + amount_minor > payment.amount_minor:
            raise RefundExceedsCapture(
                f"refund {amount_minor} exceeds the {payment.amount_minor - payment.refunded_minor} left"
            )
        payment.refunded_minor += amount_minor
        refund = SandboxRefund(id=f"sbx_re_{uuid.uuid4().hex[:20]}", idempotency_key=idempotency_key,
                               payment_id=payment_id, amount_minor=amount_minor, status="succeeded")
        session.add(refund)
        return ProviderRefund(refund.id, refund.status, refund.amount_minor)
