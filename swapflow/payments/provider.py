"""The payment provider interface: what every way of paying (wallet, subscription, WeChat Pay v3,
Stripe, the sandbox) offers the rest of swapflow. Nothing provider-specific crosses it: amounts are
integer minor units, keys are our business keys, statuses are the ones below.

Rules every implementation keeps:
- `key` is our idempotency key (`swap:<id>:charge`, `refund:<id>`), used as WeChat's `out_trade_no` /
  `out_refund_no` and Stripe's idempotency key; the same key never moves money twice.
- `charge` answers CAPTURED (wallet, subscription, sandbox), AUTHORIZED (Stripe manual capture: the
  caller captures) or PENDING (WeChat JSAPI: the rider confirms in the app; the caller polls
  `find_payment` until CAPTURED, or `close`s it at its deadline).
- A lost answer raises `ProviderTimeout` (outcome unknown: the caller asks `find_payment` /
  `find_refund` before deciding), a refusal raises `ProviderDeclined` (final, not retried), a
  transient fault raises `ProviderUnavailable` (retried).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Protocol, runtime_checkable

from pydantic import BaseModel


class PaymentMethod(StrEnum):
    """How a rider pays; each is one provider."""

    WALLET = "wallet"
    SUBSCRIPTION = "subscription"
    WECHAT = "wechat"
    STRIPE = "stripe"
    SANDBOX = "sandbox"


CONFIRMED_BY_RIDER = frozenset({PaymentMethod.WECHAT})
"""Methods whose charge waits (PENDING) for the rider to confirm it in their app (WeChat Pay's JSAPI)."""


class PaymentStatus(StrEnum):
    PENDING = "pending"  # created, not yet paid (e.g. a WeChat JSAPI order waiting for the rider)
    AUTHORIZED = "authorized"  # held, not yet taken (Stripe manual capture): `capture` or `close` next
    CAPTURED = "captured"  # the money is ours
    DECLINED = "declined"  # final refusal
    CLOSED = "closed"  # abandoned or cancelled before capture


class RefundStatus(StrEnum):
    PROCESSING = "processing"  # accepted, money on its way (WeChat to a bank card: 1-3 business days)
    SUCCEEDED = "succeeded"  # the money is back with the rider
    CLOSED = "closed"  # WeChat: refund closed (e.g. merchant balance short): resubmit with a new number
    ABNORMAL = "abnormal"  # WeChat: refund could not land (card cancelled ...): finance's abnormal-refund path
    FAILED = "failed"  # Stripe: the refund failed


FINAL_REFUND_STATUSES = frozenset(
    {RefundStatus.SUCCEEDED, RefundStatus.CLOSED, RefundStatus.ABNORMAL, RefundStatus.FAILED}
)


class ChargeRequest(BaseModel):
    """One charge. `payer` is the provider's handle for the rider (WeChat openid, Stripe customer or
    payment method id, wallet or subscription owner); `description` is shown to the rider."""

    key: str
    amount_minor: int
    currency: str
    rider_id: str
    payer: str | None = None
    description: str = "battery swap"


class ProviderPayment(BaseModel):
    """A charge as the provider reports it."""

    provider: PaymentMethod
    key: str
    payment_id: str  # the provider's id (WeChat transaction_id, Stripe PaymentIntent id, ...)
    status: PaymentStatus
    amount_minor: int
    currency: str
    refunded_minor: int = 0
    # What the rider's app needs to confirm a PENDING payment (WeChat JSAPI: the signed wx.requestPayment
    # parameters, which carry the prepay id); None when the provider needs nothing from the app.
    client_params: dict[str, str] | None = None


class RefundRequest(BaseModel):
    """One refund of (part of) a captured payment."""

    key: str
    payment: ProviderPayment
    amount_minor: int
    reason: str


class ProviderRefund(BaseModel):
    """A refund as the provider reports it."""

    provider: PaymentMethod
    key: str
    refund_id: str
    payment_id: str
    status: RefundStatus
    amount_minor: int
    created_at: datetime | None = None
    succeeded_at: datetime | None = None


class StatementLine(BaseModel):
    """One money movement in the provider's own record of a day (WeChat trade bill, Stripe balance
    transactions, the sandbox's statement): what reconciliation compares the ledger with."""

    kind: str  # "charge" | "refund"
    key: str | None  # our key, when the provider carries it
    provider_ref: str
    amount_minor: int  # positive: money in; negative: money back out
    currency: str
    at: datetime


class ProviderError(Exception):
    """Base of what a provider raises."""


class ProviderDeclined(ProviderError):
    """A final refusal (card declined, insufficient balance, invalid request): never retried."""


class ProviderUnavailable(ProviderError):
    """A transient fault (network, 5xx, rate limit): safe to retry with the same key."""


class ProviderTimeout(ProviderError):
    """The answer was lost: the money may or may not have moved. Query by key before deciding."""


class RefundExceedsCapture(ProviderDeclined):
    """A refund larger than what is left of the capture: our own guard, whatever the provider allows."""


@runtime_checkable
class PaymentProvider(Protocol):
    """One way of paying. Implementations live beside this file, one module each."""

    method: PaymentMethod

    async def charge(self, request: ChargeRequest) -> ProviderPayment:
        """Capture the amount under `request.key` (the same key returns the first answer)."""
        ...

    async def find_payment(self, key: str) -> ProviderPayment | None:
        """The payment made under `key`, as the provider sees it now; None if it never happened."""
        ...

    async def capture(self, key: str) -> ProviderPayment:
        """Take an AUTHORIZED payment (a no-op answer for one already CAPTURED)."""
        ...

    async def close(self, key: str) -> ProviderPayment:
        """Abandon a payment that was not captured: close a WeChat order, cancel a Stripe authorization."""
        ...

    async def refund(self, request: RefundRequest) -> ProviderRefund:
        """Submit a refund under `request.key`; usually answers PROCESSING or SUCCEEDED."""
        ...

    async def find_refund(self, key: str) -> ProviderRefund | None:
        """The refund submitted under `key`, with its current status; None if it never happened."""
        ...

    async def statement(self, day: date) -> list[StatementLine]:
        """The provider's own record of the money that moved on `day` (UTC)."""
        ...


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """The start and end of a UTC day (what `statement(day)` covers)."""
    start = datetime.combine(day, time.min, tzinfo=UTC)
    return start, start + timedelta(days=1)


def refund_key(refund_id: str) -> str:
    """Idempotency key of refund `refund_id` (WeChat `out_refund_no`, Stripe idempotency key)."""
    return f"refund:{refund_id}"


def refund_submission_key(refund_id: str, attempt: int) -> str:
    """Key of the `attempt`-th submission of a refund: the first is `refund_key(id)`; a refund the provider
    closed (WeChat CLOSED) is resubmitted under a new number, `refund:<id>:<attempt>`. Refund ids hold no
    colon, so the key always leads back to its refund."""
    return refund_key(refund_id) if attempt <= 1 else f"{refund_key(refund_id)}:{attempt}"


def refund_id_from_key(key: str) -> str | None:
    """The refund id a refund key (of any submission) names, or None if `key` is not a refund key."""
    prefix, _, rest = key.partition(":")
    refund_id, _, attempt = rest.partition(":")
    if prefix != "refund" or not refund_id or (attempt and not attempt.isdigit()):
        return None
    return refund_id


REFUND_NOTIFICATION_SIGNAL = "provider_notification"
"""Signal a payment notification (WeChat notify, Stripe webhook) sends to the refund workflow; its
argument is the `ProviderRefund` re-read from the provider after the notification was verified."""
