"""The refund workflow's activities: open the refund (of what was captured, never more), submit it under
its key, read its state at the provider, settle it in the ledger, resubmit it with a new number, or
escalate it to finance. Each is safe to retry: keys and attempt numbers make a repeat a no-op.

Ledger: a submitted refund is owed to the rider (debit deferred revenue for a failed swap, or
contra-revenue otherwise; credit refunds payable); when the provider says it succeeded, refunds payable
is cleared against where the money came from (provider clearing, the rider's wallet or subscription).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity

from swapflow.activities.payments import book_capture
from swapflow.db.engine import Database
from swapflow.db.money import Payment, Refund
from swapflow.db.ops import Alert
from swapflow.db.swaps import SwapOrder
from swapflow.domain.checks import present
from swapflow.domain.clock import as_utc, utcnow
from swapflow.payments.ledger import REFUNDS_PAYABLE, Posting, post_transaction
from swapflow.payments.provider import (
    PaymentMethod,
    PaymentProvider,
    PaymentStatus,
    ProviderDeclined,
    ProviderRefund,
    ProviderTimeout,
    RefundRequest,
    refund_submission_key,
)
from swapflow.payments.refunds import (
    RefundOrigin,
    RefundRefused,
    RefundState,
    add_business_days,
    book_refund_owed,
    charge_key,
    method_account,
    open_refund,
    settled_key,
)
from swapflow.payments.registry import provider_for
from swapflow.workflows.refund_contract import (
    REFUND_DECLINED,
    RefundOutcomeUnknownError,
    RefundPlan,
    RefundRef,
    RefundRefusedError,
    RefundStart,
    RefundUpdate,
)


def _plan(refund: Refund) -> RefundPlan:
    return RefundPlan(
        refund_id=refund.id,
        amount_minor=refund.amount_minor,
        currency=refund.currency,
        status=refund.status,
        attempt=refund.attempt,
        key=refund.key,
    )


def _update(refund: Refund) -> RefundUpdate:
    return RefundUpdate(
        refund_id=refund.id,
        key=refund.key,
        attempt=refund.attempt,
        provider_status=refund.provider_status,
        state=refund.status,
    )


class RefundActivities:
    """What the refund workflow does to the database and the providers; one instance per worker."""

    def __init__(self, db: Database, providers: dict[PaymentMethod, PaymentProvider]) -> None:
        self.db = db
        self.providers = providers

    async def _refund(self, session: AsyncSession, refund_id: str) -> Refund:
        refund = await session.get(Refund, refund_id)
        if refund is None:
            raise RefundRefusedError(f"no refund {refund_id}")
        return refund

    @activity.defn(name="prepare_refund")
    async def prepare(self, start: RefundStart) -> RefundPlan | None:
        """The refund to follow. For a failed swap: open the refund of what its charge captured, first
        settling a charge whose outcome the swap never learnt (asked of the provider, closed if still
        open). None: the swap took no money."""
        if not start.opened:
            if start.order_id is None:
                raise RefundRefusedError("a refund needs an order")
            if not await self._captured(start.order_id):
                return None
        async with self.db.transaction() as session:
            existing = await session.get(Refund, start.refund_id)
            if existing is not None:
                return _plan(existing)
            if start.opened:
                raise RefundRefusedError(f"no refund {start.refund_id} was opened")
            key = charge_key(start.order_id or "")
            payment = present(await session.scalar(select(Payment).where(Payment.key == key)), f"payment {key}")
            try:
                refund, _ = await open_refund(
                    session,
                    refund_id=start.refund_id,
                    payment=payment,
                    amount_minor=None,
                    reason=start.reason,
                    origin=RefundOrigin(start.origin),
                )
            except RefundRefused:
                return None  # already refunded in full by other refunds: nothing left to give back
            order = await session.get(SwapOrder, start.order_id)
            if order is not None:
                order.refund_ref = refund.id
            return _plan(refund)

    async def _captured(self, order_id: str) -> bool:
        """Whether the swap's charge captured money, resolving an unknown outcome with the provider."""
        key = charge_key(order_id)
        async with self.db.sessions() as session:
            payment = await session.scalar(select(Payment).where(Payment.key == key))
        if payment is None:
            return False  # our record precedes every provider call: the provider was never asked
        if payment.status == PaymentStatus.CAPTURED:
            return True
        provider = provider_for(self.providers, payment.method)
        found = await provider.find_payment(key)
        if found is not None and found.status in (PaymentStatus.PENDING, PaymentStatus.AUTHORIZED):
            found = await provider.close(key)  # the swap is over: an open payment must not be taken later
        if found is None or found.status != PaymentStatus.CAPTURED:
            async with self.db.transaction() as session:
                row = await session.scalar(select(Payment).where(Payment.key == key))
                if row is not None and row.status != PaymentStatus.CAPTURED:
                    row.status = found.status if found is not None else PaymentStatus.CLOSED
            return False
        await book_capture(self.db, key, found)
        return True

    @activity.defn(name="submit_refund")
    async def submit(self, ref: RefundRef) -> RefundUpdate:
        """Submit the refund's current submission (or a resubmission numbered `ref.attempt`), once per key;
        a refused submission comes back as provider status `declined`."""
        async with self.db.transaction() as session:
            refund = await self._refund(session, ref.refund_id)
            if ref.attempt > refund.attempt:  # a new number, once, however often this is retried
                refund.attempt, refund.key = ref.attempt, refund_submission_key(refund.id, ref.attempt)
                refund.status, refund.provider_status, refund.provider_ref = RefundState.REQUESTED, None, None
            present(  # the refund's payment must exist before anything is submitted
                await session.scalar(select(Payment).where(Payment.key == refund.payment_key)),
                f"payment {refund.payment_key} of refund {refund.id}",
            )
        provider = provider_for(self.providers, refund.method)
        state = await provider.find_refund(refund.key)
        if state is None:
            captured = await provider.find_payment(refund.payment_key)
            if captured is None:
                return await self._record(ref, None, declined="the provider has no such payment")
            try:
                state = await provider.refund(
                    RefundRequest(
                        key=refund.key, payment=captured, amount_minor=refund.amount_minor, reason=refund.reason
                    )
                )
            except ProviderDeclined as refused:
                return await self._record(ref, None, declined=str(refused))
            except ProviderTimeout as lost:
                raise RefundOutcomeUnknownError(f"refund outcome unknown: {lost}") from None
        return await self._record(ref, state)

    @activity.defn(name="poll_refund")
    async def poll(self, ref: RefundRef) -> RefundUpdate:
        """The provider's current state of the refund's current submission, recorded on our row."""
        async with self.db.sessions() as session:
            refund = await self._refund(session, ref.refund_id)
        state = await provider_for(self.providers, refund.method).find_refund(refund.key)
        if state is None:  # never reached the provider: submit it (same key) instead
            return await self.submit(ref)
        return await self._record(ref, state)

    async def _record(
        self, ref: RefundRef, state: ProviderRefund | None, *, declined: str | None = None
    ) -> RefundUpdate:
        async with self.db.transaction() as session:
            refund = await self._refund(session, ref.refund_id)
            if state is None:
                refund.provider_status = REFUND_DECLINED
                refund.reason = f"{refund.reason} (provider refused: {declined})"[:2000]
                return _update(refund)
            refund.provider_status, refund.provider_ref = state.status, state.refund_id
            if state.succeeded_at is not None and refund.succeeded_at is None:
                refund.succeeded_at = state.succeeded_at  # the day a WeChat bill lists the refund
            if refund.submitted_at is None:
                refund.submitted_at = state.created_at or utcnow()
                refund.expected_by = add_business_days(as_utc(refund.submitted_at), ref.expected_days)
                await book_refund_owed(session, refund)
            if refund.status == RefundState.REQUESTED:
                refund.status = RefundState.PROCESSING
            return _update(refund)

    @activity.defn(name="settle_refund")
    async def settle(self, ref: RefundRef) -> RefundUpdate:
        """The money is back with the rider: clear what was owed against where it came from."""
        async with self.db.transaction() as session:
            refund = await self._refund(session, ref.refund_id)
            await post_transaction(
                session,
                key=settled_key(refund.id),
                kind="refund_settled",
                currency=refund.currency,
                order_id=refund.order_id,
                memo=f"{refund.method} refund {refund.provider_ref}",
                postings=[
                    Posting(REFUNDS_PAYABLE, refund.amount_minor),
                    Posting(method_account(refund.method, refund.rider_id), -refund.amount_minor),
                ],
            )
            if refund.status != RefundState.SUCCEEDED:
                refund.status, refund.final_at = RefundState.SUCCEEDED, utcnow()
            return _update(refund)

    @activity.defn(name="escalate_refund")
    async def escalate(self, ref: RefundRef) -> RefundUpdate:
        """The provider could not return the money (abnormal, failed, refused, closed too often): finance's
        abnormal-refund path takes over. The amount stays owed (refunds payable) until finance acts."""
        async with self.db.transaction() as session:
            refund = await self._refund(session, ref.refund_id)
            if refund.status != RefundState.ESCALATED:
                refund.status, refund.escalated, refund.final_at = RefundState.ESCALATED, True, utcnow()
                session.add(
                    Alert(
                        kind="refund_escalated",
                        severity="critical",
                        dedupe_key=f"refund_escalated:{refund.id}",
                        order_id=refund.order_id,
                        message=f"refund {refund.id} ({refund.amount_minor} {refund.currency}, {refund.method}) is "
                        f"{refund.provider_status} at the provider after {refund.attempt} submission(s): "
                        "abnormal-refund path",
                    )
                )
            return _update(refund)
