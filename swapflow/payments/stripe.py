"""Stripe through the `stripe` SDK's `StripeClient` (its async methods over httpx): PaymentIntents with
manual capture, refunds, balance transactions, webhook signatures.

Our key rides in every object's metadata (`swapflow_key`) and is Stripe's idempotency key. Before creating
anything the provider looks the key up, so a retry answers the first object even where idempotency keys
are not enforced (localstripe; or past Stripe's 24-hour window). Refunds are checked against what is left
of the capture by our own guard, whatever the server allows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

import httpx
import stripe
from stripe.params import BalanceTransactionListParams, PaymentIntentCreateParams, RefundListParams

from swapflow.payments.notifications import (
    NotificationMalformed,
    NotificationRejected,
    NotificationSubject,
    VerifiedNotification,
    object_value,
    text_field,
)
from swapflow.payments.provider import (
    ChargeRequest,
    PaymentMethod,
    PaymentStatus,
    ProviderDeclined,
    ProviderPayment,
    ProviderRefund,
    ProviderTimeout,
    ProviderUnavailable,
    RefundExceedsCapture,
    RefundRequest,
    RefundStatus,
    StatementLine,
)
from swapflow.settings import Settings

KEY = "swapflow_key"  # metadata field holding our key

_INTENT_STATES = {
    "requires_capture": PaymentStatus.AUTHORIZED,
    "succeeded": PaymentStatus.CAPTURED,
    "canceled": PaymentStatus.CLOSED,
    "requires_payment_method": PaymentStatus.DECLINED,  # after a confirmation that failed
}
_REFUND_STATES = {
    "pending": RefundStatus.PROCESSING,
    "requires_action": RefundStatus.PROCESSING,
    "succeeded": RefundStatus.SUCCEEDED,
    "failed": RefundStatus.FAILED,
    "canceled": RefundStatus.FAILED,
}


class StripeProvider:
    """`PaymentProvider` for card payments through Stripe (authorize at charge, capture after the swap)."""

    method = PaymentMethod.STRIPE

    def __init__(self, settings: Settings) -> None:
        if not settings.stripe.api_key:
            raise ValueError("Stripe needs SWAPFLOW_STRIPE_API_KEY")
        self._client = stripe_client(settings)
        self._full_api = settings.stripe.full_api
        self._webhook_secret = settings.stripe.webhook_secret
        self._tolerance_s = settings.payments.notification_tolerance_s
        self._refund_lookback = timedelta(days=settings.stripe.refund_lookback_days)

    # ---- payments ----

    async def charge(self, request: ChargeRequest) -> ProviderPayment:
        """Authorize the amount on the rider's card: AUTHORIZED (capture or close next).

        `request.payer` is the rider's saved PaymentMethod id, optionally `cus_…/pm_…` with its Customer."""
        existing = await self.find_payment(request.key)
        if existing is None:
            if not request.payer:
                raise ProviderDeclined("a Stripe charge needs the rider's payment method as payer")
            customer, _, method = request.payer.rpartition("/")
            params: dict[str, Any] = {
                "amount": request.amount_minor,
                "currency": request.currency.lower(),
                "payment_method": method,
                "payment_method_types": ["card"],
                "capture_method": "manual",
                "confirm": True,
                "metadata": {KEY: request.key, "rider_id": request.rider_id, "description": request.description},
            }
            if customer:
                params["customer"] = customer
            intent = await stripe_call(
                self._client.v1.payment_intents.create_async(
                    params=cast(PaymentIntentCreateParams, params), options={"idempotency_key": request.key}
                )
            )
            existing = await self._payment_from(intent, request.key)
        if existing.status is PaymentStatus.DECLINED:
            raise ProviderDeclined(f"Stripe declined {request.key}")
        return existing

    async def find_payment(self, key: str) -> ProviderPayment | None:
        """The PaymentIntent made under `key`; None if there is none."""
        intent = await self._find_intent(key)
        return None if intent is None else await self._payment_from(intent, key)

    async def capture(self, key: str) -> ProviderPayment:
        """Capture an authorized PaymentIntent; one already captured is answered as it is."""
        intent = await self._require_intent(key)
        if intent.status == "requires_capture":
            intent = await stripe_call(
                self._client.v1.payment_intents.capture_async(intent.id, options={"idempotency_key": f"{key}:capture"})
            )
        payment = await self._payment_from(intent, key)
        if payment.status is not PaymentStatus.CAPTURED:
            raise ProviderDeclined(f"Stripe payment {key} is {payment.status.value}: nothing to capture")
        return payment

    async def close(self, key: str) -> ProviderPayment:
        """Cancel an uncaptured PaymentIntent (releasing the hold); a captured one is answered as it is."""
        intent = await self._require_intent(key)
        if intent.status not in ("canceled", "succeeded"):
            intent = await stripe_call(
                self._client.v1.payment_intents.cancel_async(intent.id, options={"idempotency_key": f"{key}:cancel"})
            )
        return await self._payment_from(intent, key)

    # ---- refunds ----

    async def refund(self, request: RefundRequest) -> ProviderRefund:
        """Refund (part of) a captured PaymentIntent under `request.key`; never more than is left of it."""
        intent = await self._require_intent(request.payment.key)
        payment = await self._payment_from(intent, request.payment.key)
        if payment.status is not PaymentStatus.CAPTURED:
            raise RefundExceedsCapture(
                f"Stripe payment {request.payment.key} is {payment.status.value}: nothing was captured"
            )
        existing = await self._refund_of_intent(intent.id, request.key)
        if existing is not None:
            return existing
        left = payment.amount_minor - payment.refunded_minor
        if request.amount_minor > left:
            raise RefundExceedsCapture(
                f"refund of {request.amount_minor} exceeds the {left} left of {request.payment.key}"
            )
        refund = await stripe_call(
            self._client.v1.refunds.create_async(
                params={
                    "payment_intent": intent.id,
                    "amount": request.amount_minor,
                    "metadata": {KEY: request.key, "reason": request.reason[:500]},
                },
                options={"idempotency_key": request.key},
            )
        )
        return self._refund_from(refund, request.key)

    async def find_refund(self, key: str) -> ProviderRefund | None:
        """The refund made under `key`. Stripe cannot search refunds: the recent ones are listed, newest
        first, back to `stripe_refund_lookback_days`."""
        oldest = int(time.time() - self._refund_lookback.total_seconds())
        params: RefundListParams = {"limit": 100}
        if self._full_api:
            params["created"] = {"gte": oldest}
        page = await stripe_call(self._client.v1.refunds.list_async(params=params))
        async for refund in page.auto_paging_iter():
            if refund.created < oldest:
                break
            if metadata_of(refund).get(KEY) == key:
                return self._refund_from(refund, key)
        return None

    # ---- statement ----

    async def statement(self, day: date) -> list[StatementLine]:
        """The balance transactions (charges and refunds) created on the UTC `day`."""
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        start_s, end_s = start.timestamp(), (start + timedelta(days=1)).timestamp()
        lines: list[StatementLine] = []
        # Listed newest first; without `created` filters (localstripe) the walk stops at the day's start.
        params: BalanceTransactionListParams = {"limit": 100}
        if self._full_api:
            params["created"] = {"gte": int(start_s), "lt": int(end_s)}
        page = await stripe_call(self._client.v1.balance_transactions.list_async(params=params))
        async for txn in page.auto_paging_iter():
            if txn.created < start_s:
                break
            if txn.created >= end_s or txn.type not in ("charge", "payment", "refund"):
                continue
            source = txn.source if isinstance(txn.source, str) else txn.source.id
            kind = "refund" if txn.type == "refund" else "charge"
            lines.append(
                StatementLine(
                    kind=kind,
                    key=await self._key_of_source(source),
                    provider_ref=source,
                    amount_minor=int(txn.amount),
                    currency=str(txn.currency).upper(),
                    at=datetime.fromtimestamp(txn.created, UTC),
                )
            )
        return sorted(lines, key=lambda line: line.at)

    async def _key_of_source(self, source: str) -> str | None:
        if source.startswith("re_"):
            return metadata_of(await stripe_call(self._client.v1.refunds.retrieve_async(source))).get(KEY)
        charge = await stripe_call(self._client.v1.charges.retrieve_async(source))
        intent_id = charge.payment_intent if isinstance(charge.payment_intent, str | None) else charge.payment_intent.id
        if not intent_id:
            return metadata_of(charge).get(KEY)
        return metadata_of(await stripe_call(self._client.v1.payment_intents.retrieve_async(intent_id))).get(KEY)

    # ---- notifications ----

    def verify_notification(
        self, headers: Mapping[str, str], body: bytes, *, now: float | None = None
    ) -> VerifiedNotification:
        """Check a webhook's `Stripe-Signature` (HMAC with the endpoint's secret) and that its timestamp
        is within the tolerance either way. Raises `NotificationRejected`."""
        if not self._webhook_secret:
            raise NotificationRejected("no Stripe webhook secret is configured")
        header = {name.lower(): value for name, value in headers.items()}.get("stripe-signature", "")
        try:
            # tolerance=0: the SDK checks only for old events; both directions are checked below.
            stripe.WebhookSignature.verify_header(body, header, self._webhook_secret, tolerance=0)
        except (stripe.SignatureVerificationError, ValueError) as exc:
            raise NotificationRejected(f"webhook signature is not valid: {exc}") from exc
        stamps = [part[2:] for part in header.split(",") if part.startswith("t=")]
        sent = int(stamps[0])  # present: the signature check needs it
        if abs((time.time() if now is None else now) - sent) > self._tolerance_s:
            raise NotificationRejected(f"webhook timestamp {sent} is stale", stale=True)
        # Authentic from here on: content Stripe does not document is malformed, not forged.
        content: Any = None
        try:
            content = json.loads(body)
            payload = object_value(content, where="event")
            event_type = text_field(payload, "type", where="event") or ""
            subject_object = object_value(
                object_value(payload.get("data"), where="event.data").get("object"), where="event.data.object"
            )
            metadata = object_value(subject_object.get("metadata"), where="event.data.object.metadata")
            key = text_field(metadata, KEY, where="event.data.object.metadata")
            notification_id = text_field(payload, "id", where="event") or ""
        except (NotificationMalformed, ValueError) as exc:
            event = content if isinstance(content, dict) else {}
            raise NotificationMalformed(
                str(exc),
                body=body,
                content=content,
                event_type=str(event.get("type", "")),
                notification_id=event["id"] if isinstance(event.get("id"), str) else None,
            ) from None
        if event_type.startswith("payment_intent."):
            subject = NotificationSubject.PAYMENT
        elif event_type.startswith(("refund.", "charge.refund.")):
            subject = NotificationSubject.REFUND
        else:
            subject, key = NotificationSubject.OTHER, None
        return VerifiedNotification(
            provider=self.method,
            notification_id=notification_id,
            event_type=event_type,
            subject=subject,
            key=key,
            payload=payload,
        )

    # ---- plumbing ----

    async def _find_intent(self, key: str) -> stripe.PaymentIntent | None:
        if self._full_api:
            found = await stripe_call(
                self._client.v1.payment_intents.search_async(params={"query": f"metadata['{KEY}']:'{key}'", "limit": 1})
            )
            return found.data[0] if found.data else None
        page = await stripe_call(self._client.v1.payment_intents.list_async(params={"limit": 100}))
        async for intent in page.auto_paging_iter():
            if metadata_of(intent).get(KEY) == key:
                return intent
        return None

    async def _require_intent(self, key: str) -> stripe.PaymentIntent:
        intent = await self._find_intent(key)
        if intent is None:
            raise ProviderDeclined(f"no Stripe payment {key}")
        return intent

    async def _refund_of_intent(self, intent_id: str, key: str) -> ProviderRefund | None:
        page = await stripe_call(self._client.v1.refunds.list_async(params={"payment_intent": intent_id, "limit": 100}))
        async for refund in page.auto_paging_iter():
            if metadata_of(refund).get(KEY) == key:
                return self._refund_from(refund, key)
        return None

    async def _payment_from(self, intent: stripe.PaymentIntent, key: str) -> ProviderPayment:
        status = _INTENT_STATES.get(intent.status, PaymentStatus.PENDING)
        refunded = 0
        if status is PaymentStatus.CAPTURED:
            charge = intent.latest_charge
            if isinstance(charge, str):  # Stripe answers an id unless expanded; localstripe the object
                charge = await stripe_call(self._client.v1.charges.retrieve_async(charge))
            if charge is not None:
                refunded = int(getattr(charge, "amount_refunded", 0) or 0)
        return ProviderPayment(
            provider=self.method,
            key=key,
            payment_id=intent.id,
            status=status,
            amount_minor=int(getattr(intent, "amount_received", None) or intent.amount),
            currency=str(intent.currency).upper(),
            refunded_minor=refunded,
        )

    def _refund_from(self, refund: stripe.Refund, key: str) -> ProviderRefund:
        status = _REFUND_STATES.get(str(refund.status), RefundStatus.PROCESSING)
        created = datetime.fromtimestamp(refund.created, UTC)
        payment = getattr(refund, "payment_intent", None) or getattr(refund, "charge", None) or ""
        return ProviderRefund(
            provider=self.method,
            key=key,
            refund_id=refund.id,
            payment_id=payment if isinstance(payment, str) else payment.id,
            status=status,
            amount_minor=int(refund.amount),
            created_at=created,
            succeeded_at=created if status is RefundStatus.SUCCEEDED else None,
        )


async def stripe_call(request: Any) -> Any:
    """Await one SDK call, classifying its failure: declined/invalid is final, the rest is retried."""
    try:
        return await request
    except stripe.APIConnectionError as exc:
        if isinstance(exc.__cause__, httpx.ConnectTimeout | httpx.ConnectError):
            raise ProviderUnavailable(f"Stripe unreachable: {exc}") from exc
        if isinstance(exc.__cause__, httpx.TimeoutException):  # sent, answer lost: outcome unknown
            raise ProviderTimeout(f"Stripe did not answer in time: {exc}") from exc
        raise ProviderUnavailable(f"Stripe unreachable: {exc}") from exc
    except stripe.RateLimitError as exc:
        raise ProviderUnavailable(f"Stripe rate limit: {exc}") from exc
    except (
        stripe.CardError,
        stripe.InvalidRequestError,
        stripe.IdempotencyError,
        stripe.AuthenticationError,
        stripe.PermissionError,
    ) as exc:
        raise ProviderDeclined(f"Stripe refused: {exc}") from exc
    except stripe.StripeError as exc:  # 5xx and anything unexpected from the server
        raise ProviderUnavailable(f"Stripe error: {exc}") from exc


def metadata_of(obj: Any) -> dict[str, Any]:
    """An SDK object's metadata as a plain dict (where our key is kept)."""
    metadata: Any = getattr(obj, "metadata", None)
    return metadata.to_dict() if hasattr(metadata, "to_dict") else dict(metadata or {})


def stripe_client(settings: Settings, http_client: stripe.HTTPXClient | None = None) -> stripe.StripeClient:
    """The SDK's client for our account, as every Stripe module here uses it (over `http_client`, for a
    caller that closes it after use)."""
    return stripe.StripeClient(
        cast(str, settings.stripe.api_key),
        base_addresses={"api": settings.stripe.api_base} if settings.stripe.api_base else None,
        http_client=http_client or stripe.HTTPXClient(timeout=settings.stripe.timeout_s),
        # No retries inside the SDK: a retry is the caller's, after it looked the key up.
        max_network_retries=0,
    )


def provider_from_settings(settings: Settings, db: object) -> StripeProvider | None:
    """The Stripe provider when an API key is configured (the registry's hook), else None."""
    return StripeProvider(settings) if settings.stripe.api_key else None
