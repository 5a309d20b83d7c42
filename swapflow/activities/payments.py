"""Charging a swap through the rider's payment provider, then the ledger postings.

The charge's key (`swap:<id>:charge`) and method are written to our `payments` table before the provider
is first asked, so every retry uses the same key and provider and asks the provider what happened before
it charges: a lost answer (timeout) is "unknown", never "failed". A pending charge (the rider confirms
in the app, with the parameters the charge answered, which our record keeps for the app) is polled with
heartbeats until captured or its deadline, then closed. Refusals are final (non-retryable); network
faults are retried by Temporal.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import select
from temporalio import activity

from swapflow.db.engine import Database
from swapflow.db.money import Payment
from swapflow.db.swaps import SwapOrder
from swapflow.domain.checks import present
from swapflow.domain.clock import as_utc, utcnow
from swapflow.domain.swaps import SwapStage
from swapflow.payments.ledger import DEFERRED_REVENUE, Posting, post_transaction
from swapflow.payments.provider import (
    ChargeRequest,
    PaymentMethod,
    PaymentProvider,
    PaymentStatus,
    ProviderDeclined,
    ProviderError,
    ProviderPayment,
    ProviderTimeout,
)
from swapflow.payments.refunds import charge_key, method_account
from swapflow.payments.registry import UnknownProvider, payer_method, provider_for
from swapflow.settings import Settings
from swapflow.workflows.swap_contract import (
    ChargeInput,
    PaymentDeclinedError,
    PaymentOutcomeUnknownError,
    PaymentResult,
    UnknownOrderError,
)

__all__ = ["PaymentActivities", "charge_key"]


class PaymentActivities:
    """Charge swaps; one instance per worker."""

    def __init__(self, db: Database, providers: dict[PaymentMethod, PaymentProvider], settings: Settings) -> None:
        self.db = db
        self.providers = providers
        self.pending_timeout = timedelta(seconds=settings.payments.payment_pending_timeout_s)
        self.poll_interval_s = settings.payments.payment_poll_interval_s

    async def _record(self, charge: ChargeInput) -> Payment:
        """Our record of the charge, written before the provider is first asked (once)."""
        key = charge_key(charge.order_id)
        async with self.db.transaction() as session:
            payment = await session.scalar(select(Payment).where(Payment.key == key))
            if payment is None:
                order = await session.get(SwapOrder, charge.order_id)
                if order is None:
                    raise UnknownOrderError(f"no order {charge.order_id}")
                how = await payer_method(session, order.rider_id)
                payment = Payment(
                    key=key,
                    order_id=charge.order_id,
                    rider_id=order.rider_id,
                    method=how.method,
                    amount_minor=charge.amount_minor,
                    currency=charge.currency,
                    status="initiated",
                    payer=how.payer,
                )
                session.add(payment)
        return payment

    async def _mark(
        self, key: str, status: str, provider_ref: str | None = None, client_params: dict[str, str] | None = None
    ) -> None:
        async with self.db.transaction() as session:
            payment = present(await session.scalar(select(Payment).where(Payment.key == key)), f"payment {key}")
            payment.status = status
            if provider_ref:
                payment.provider_ref = provider_ref
            if client_params:  # only the charge's first answer carries them: a retry's lookup keeps them
                payment.client_params = client_params

    async def _declined(self, key: str, reason: str) -> PaymentDeclinedError:
        await self._mark(key, PaymentStatus.DECLINED)
        return PaymentDeclinedError("payment_declined", reason)

    @activity.defn(name="charge_swap")
    async def charge(self, charge: ChargeInput) -> PaymentResult:
        """Capture the swap's price with the rider's provider and post it to deferred revenue until the
        swap completes. Retried attempts ask the provider first, so the rider is charged once. A price of
        0 asks no provider at all, whatever the method: the swap is free, with no payment to refund."""
        if charge.amount_minor == 0:
            await book_free(self.db, charge.order_id)
            return PaymentResult(payment_ref="", amount_minor=0)
        record = await self._record(charge)
        payment = await self.collect(record)
        await book_capture(self.db, record.key, payment)
        return PaymentResult(payment_ref=payment.payment_id, amount_minor=payment.amount_minor)

    async def collect(self, record: Payment, description: str = "battery swap") -> ProviderPayment:
        """Take the money of our payment `record` with its provider, once by its key: the captured payment,
        or a non-retryable PaymentDeclinedError (also recorded) when no money can be taken."""
        if record.status in (PaymentStatus.CLOSED, PaymentStatus.DECLINED):
            # Settled as "nothing taken" (the swap's refund, or the top-up, ended meanwhile): never charge now.
            raise PaymentDeclinedError("payment_declined", record.status)
        try:
            provider = provider_for(self.providers, record.method)
        except UnknownProvider:
            # The rider's method is not configured on this worker: no money can be taken, so say no at once.
            raise await self._declined(record.key, f"payment_method_unavailable: {record.method}") from None
        key = record.key
        request = ChargeRequest(
            key=key,
            amount_minor=record.amount_minor,
            currency=record.currency,
            rider_id=record.rider_id,
            payer=record.payer,
            description=description,
        )
        payment = await provider.find_payment(key)
        if payment is None:
            try:
                payment = await provider.charge(request)
            except ProviderDeclined as declined:
                raise await self._declined(key, str(declined)) from None
            except ProviderTimeout as lost:
                # Unknown, not failed: the retry asks the provider what happened under the same key.
                raise PaymentOutcomeUnknownError(f"payment outcome unknown: {lost}") from None
        elif payment.status == PaymentStatus.PENDING and not record.client_params:
            # The answer carrying the app's parameters was lost: the same key answers the same order with them.
            try:
                payment = await provider.charge(request)
            except ProviderError:
                pass  # the order stands, followed as it is (the app waits for its parameters in vain)
        payment = await self._until_settled(provider, record, payment)
        if payment.status == PaymentStatus.AUTHORIZED:
            payment = await provider.capture(key)
        if payment.status != PaymentStatus.CAPTURED:
            raise await self._declined(key, payment.status)
        return payment

    async def closed_unless_captured(self, record: Payment) -> ProviderPayment | None:
        """Our payment `record` as its provider has it now, after closing it there if it was left open
        (pending, authorized): what a top-up or a plan purchase settles on. None: the provider never had it."""
        try:
            provider = provider_for(self.providers, record.method)
        except UnknownProvider:
            return None
        found = await provider.find_payment(record.key)
        if found is not None and found.status in (PaymentStatus.PENDING, PaymentStatus.AUTHORIZED):
            try:
                found = await provider.close(record.key)
            except ProviderDeclined:
                found = await provider.find_payment(record.key)  # captured meanwhile: it is the rider's money
        return found

    async def _until_settled(
        self, provider: PaymentProvider, record: Payment, payment: ProviderPayment
    ) -> ProviderPayment:
        """Poll a pending payment until it is no longer pending; close it at its deadline (counted from
        our record, so retries do not extend it)."""
        deadline = as_utc(record.created_at) + self.pending_timeout
        if payment.status == PaymentStatus.PENDING:
            # The rider's app reads what it confirms the payment with from our record (GET of the swap).
            await self._mark(record.key, PaymentStatus.PENDING, payment.payment_id, payment.client_params)
        while payment.status == PaymentStatus.PENDING:
            if utcnow() >= deadline:
                payment = await provider.close(record.key)
                if payment.status == PaymentStatus.PENDING:  # closed while we asked: final either way
                    payment = payment.model_copy(update={"status": PaymentStatus.CLOSED})
                break
            activity.heartbeat(payment.status.value)
            await asyncio.sleep(self.poll_interval_s)
            payment = await provider.find_payment(record.key) or payment
        return payment


async def book_capture(db: Database, key: str, payment: ProviderPayment) -> None:
    """A capture in the ledger (once, by key: debit where the method's money sits, credit deferred revenue
    until the swap completes), on our payment record and on the order."""
    async with db.transaction() as session:
        row = present(await session.scalar(select(Payment).where(Payment.key == key)), f"payment {key}")
        await post_transaction(
            session,
            key=key,
            kind="swap_charge",
            currency=payment.currency,
            order_id=row.order_id,
            memo=f"{row.method} payment {payment.payment_id}",
            postings=[
                Posting(method_account(row.method, row.rider_id), payment.amount_minor),
                Posting(DEFERRED_REVENUE, -payment.amount_minor),
            ],
        )
        row.status, row.provider_ref, row.amount_minor = (
            PaymentStatus.CAPTURED,
            payment.payment_id,
            payment.amount_minor,
        )
        row.captured_at = row.captured_at or utcnow()  # the day a provider's statement lists the charge
        order = await session.get(SwapOrder, row.order_id) if row.order_id else None
        if order is not None and order.payment_ref is None:
            order.payment_ref = payment.payment_id
            if order.stage in (SwapStage.CREATED, SwapStage.RESERVED):
                order.stage = SwapStage.PAID
            order.steps = [
                *order.steps,
                {"step": "charge", "outcome": "ok", "detail": f"{row.method} {payment.payment_id}"},
            ]


async def book_free(db: Database, order_id: str) -> None:
    """A swap priced 0 on its order: paid, with nothing charged (no payment, no ledger entry)."""
    async with db.transaction() as session:
        order = await session.get(SwapOrder, order_id)
        if order is None or any(step.get("step") == "charge" for step in order.steps):
            return
        if order.stage in (SwapStage.CREATED, SwapStage.RESERVED):
            order.stage = SwapStage.PAID
        order.steps = [*order.steps, {"step": "charge", "outcome": "ok", "detail": "free: price 0, nothing charged"}]
