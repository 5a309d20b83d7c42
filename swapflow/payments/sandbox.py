"""The sandbox payment provider: the embedded default. It keeps real state in its own tables, committed
in its own transactions as a real provider keeps it on its side, honours idempotency keys the way
WeChat Pay and Stripe do, and can decline or lose its answer at configured rates to exercise faults."""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass

from sqlalchemy import select

from swapflow.db.engine import Database
from swapflow.db.models import SandboxPayment, SandboxRefund

PROVIDER = "sandbox"


@dataclass(frozen=True)
class ProviderPayment:
    payment_id: str
    status: str  # captured | declined
    amount_minor: int
    currency: str
    refunded_minor: int


@dataclass(frozen=True)
class ProviderRefund:
    refund_id: str
    status: str  # succeeded
    amount_minor: int


class ProviderTimeout(TimeoutError):
    """The provider's answer was lost: the charge may or may not have happened. Query before deciding."""


class RefundExceedsCapture(ValueError):
    """A refund larger than what is left of the capture."""


def _payment(row: SandboxPayment) -> ProviderPayment:
    return ProviderPayment(row.id, row.status, row.amount_minor, row.currency, row.refunded_minor)


class SandboxProvider:
    """Charges and refunds against the sandbox tables."""

    def __init__(self, db: Database, *, latency_ms: int = 0, decline_rate: float = 0.0,
                 timeout_rate: float = 0.0, rng: random.Random | None = None) -> None:
        self.db = db
        self.latency_ms = latency_ms
        self.decline_rate = decline_rate
        self.timeout_rate = timeout_rate
        self.rng = rng or random.Random()

    async def _latency(self) -> None:
        if self.latency_ms:
            await asyncio.sleep(self.latency_ms / 1000)

    async def charge(self, *, idempotency_key: str, amount_minor: int, currency: str) -> ProviderPayment:
        """Capture `amount_minor` (or decline). The same key returns the first answer instead of charging
        again. May raise ProviderTimeout after the capture happened, as a real provider's lost answer."""
        await self._latency()
        declined = self.rng.random() < self.decline_rate
        async with self.db.transaction() as session:
            row = await session.scalar(select(SandboxPayment).where(SandboxPayment.idempotency_key == idempotency_key))
            if row is not None:
                return _payment(row)
            row = SandboxPayment(id=f"sbx_pay_{uuid.uuid4().hex[:20]}", idempotency_key=idempotency_key,
                                 amount_minor=amount_minor, currency=currency,
                                 status="declined" if declined else "captured")
            session.add(row)
        if self.rng.random() < self.timeout_rate:
            raise ProviderTimeout(f"sandbox: no answer for {idempotency_key}")
        return _payment(row)

    async def find_payment(self, idempotency_key: str) -> ProviderPayment | None:
        """The payment made under a key, if any: how a timed-out charge is resolved."""
        async with self.db.sessions() as session:
            row = await session.scalar(select(SandboxPayment).where(SandboxPayment.idempotency_key == idempotency_key))
        return None if row is None else _payment(row)

    async def refund(self, *, idempotency_key: str, payment_id: str, amount_minor: int) -> ProviderRefund:
        """Refund part or all of a capture, once per key; never more than was captured."""
        await self._latency()
        async with self.db.transaction() as session:
            existing = await session.scalar(
                select(SandboxRefund).where(SandboxRefund.idempotency_key == idempotency_key))
            if existing is not None:
                return ProviderRefund(existing.id, existing.status, existing.amount_minor)
            payment = await session.get(SandboxPayment, payment_id)
            if payment is None:
                raise LookupError(f"no sandbox payment {payment_id}")
            if payment.refunded_minor + amount_minor > payment.amount_minor:
                raise RefundExceedsCapture(
                    f"refund {amount_minor} exceeds the {payment.amount_minor - payment.refunded_minor} left")
            payment.refunded_minor += amount_minor
            refund = SandboxRefund(id=f"sbx_re_{uuid.uuid4().hex[:20]}", idempotency_key=idempotency_key,
                                   payment_id=payment_id, amount_minor=amount_minor, status="succeeded")
            session.add(refund)
        return ProviderRefund(refund.id, refund.status, refund.amount_minor)
