"""The sandbox payout provider: pays partners in the demo and the tests. Like the sandbox payment provider
it keeps real state in its own table (`sandbox_payouts`), committed in its own transactions as a real
provider keeps it on its side, and honours idempotency keys: the same key never pays twice.

A payout is PROCESSING when accepted and has SUCCEEDED once `delay_s` has passed (as WeChat's merchant
transfers take a while), found so by `find_payout`. Faults, for tests and the demo: `failure_rate` of
payouts fail when they would have landed (decided when accepted, as a closed account would be);
`settle_payout` ends one in any final state (what the bank does to a real one); while `unreachable` is
set, every call raises ProviderUnavailable.
"""

from __future__ import annotations

import random
import uuid
from datetime import timedelta

from sqlalchemy import select

from swapflow.db.commissions import SandboxPayout
from swapflow.db.engine import Database
from swapflow.domain.clock import as_utc, utcnow
from swapflow.payments.payouts import PayoutMethod, PayoutRequest, PayoutStatus, ProviderPayout
from swapflow.payments.provider import ProviderUnavailable

FAILURE = "sandbox: the partner's account refused the transfer"


def _payout(row: SandboxPayout) -> ProviderPayout:
    return ProviderPayout(
        method=PayoutMethod.SANDBOX,
        key=row.idempotency_key,
        payout_id=row.id,
        status=PayoutStatus(row.status),
        amount_minor=row.amount_minor,
        currency=row.currency,
        failure_reason=row.failure_reason,
    )


class SandboxPayoutProvider:
    """Payouts against the `sandbox_payouts` table (PayoutProvider)."""

    method = PayoutMethod.SANDBOX

    def __init__(
        self, db: Database, *, delay_s: float = 0.0, failure_rate: float = 0.0, rng: random.Random | None = None
    ) -> None:
        self.db = db
        self.delay_s = delay_s
        self.failure_rate = failure_rate
        self.rng = rng or random.Random()
        self.unreachable = False

    def _reachable(self) -> None:
        if self.unreachable:
            raise ProviderUnavailable("sandbox payouts: unreachable")

    async def pay(self, request: PayoutRequest) -> ProviderPayout:
        """Accept the payout (PROCESSING); the same key answers the payout it made."""
        self._reachable()
        async with self.db.transaction() as session:
            row = await session.scalar(select(SandboxPayout).where(SandboxPayout.idempotency_key == request.key))
            if row is None:
                now = utcnow()
                row = SandboxPayout(
                    id=f"sbx_po_{uuid.uuid4().hex[:20]}",
                    idempotency_key=request.key,
                    account=request.account,
                    amount_minor=request.amount_minor,
                    currency=request.currency,
                    status=PayoutStatus.PROCESSING,
                    # Kept while processing: that it will fail, and why, once it is due.
                    failure_reason=FAILURE if self.rng.random() < self.failure_rate else None,
                    created_at=now,
                    settles_at=now + timedelta(seconds=self.delay_s),
                )
                session.add(row)
        return _payout(row)

    async def find_payout(self, key: str) -> ProviderPayout | None:
        """The payout under `key`; a processing one whose time has come has landed (or failed) by now."""
        self._reachable()
        async with self.db.transaction() as session:
            row = await session.scalar(select(SandboxPayout).where(SandboxPayout.idempotency_key == key))
            if row is None:
                return None
            if (
                row.status == PayoutStatus.PROCESSING
                and row.settles_at is not None
                and as_utc(row.settles_at) <= utcnow()
            ):
                row.status = PayoutStatus.FAILED if row.failure_reason else PayoutStatus.SUCCEEDED
            return _payout(row)

    async def settle_payout(self, key: str, status: PayoutStatus, reason: str | None = None) -> ProviderPayout:
        """End a payout as the bank would: a processing one in any final state, a succeeded one RETURNED."""
        async with self.db.transaction() as session:
            row = await session.scalar(select(SandboxPayout).where(SandboxPayout.idempotency_key == key))
            if row is None:
                raise LookupError(f"no sandbox payout under {key}")
            ending = row.status == PayoutStatus.PROCESSING or (
                row.status == PayoutStatus.SUCCEEDED and status == PayoutStatus.RETURNED
            )
            if ending:
                row.status = status
                row.failure_reason = reason if status != PayoutStatus.SUCCEEDED else None
        return _payout(row)
