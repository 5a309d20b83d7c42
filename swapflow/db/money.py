"""Money: our record of charges and refunds, the ledger, wallets, subscriptions, complaints, provider
notifications, reconciliation, and the sandbox provider's own state."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from swapflow.db.base import Base
from swapflow.domain.clock import utcnow


class RiderPaymentMethod(Base):
    """One way a rider pays (a `swapflow.payments.provider.PaymentMethod`) and the provider's handle for
    them. A rider may keep several; swaps, top-ups and plans are charged through the default one. A rider
    without a default pays by the sandbox. Removed methods are kept, with `removed_at`, never default."""

    __tablename__ = "rider_payment_methods"
    __table_args__ = (
        # At most one default per rider: the charge never has to choose.
        Index(
            "uq_rider_payment_methods_default",
            "rider_id",
            unique=True,
            sqlite_where=text("is_default"),
            postgresql_where=text("is_default"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    rider_id: Mapped[str] = mapped_column(ForeignKey("riders.id"), index=True)
    method: Mapped[str] = mapped_column(String(16), doc="wechat | stripe | wallet | subscription | sandbox")
    payer: Mapped[str | None] = mapped_column(
        String(120), nullable=True, doc="The provider's handle for the rider: WeChat openid, Stripe customer id."
    )
    provider_ref: Mapped[str | None] = mapped_column(
        String(80), nullable=True, doc="The provider's id of the instrument: a Stripe PaymentMethod id."
    )
    label: Mapped[str] = mapped_column(String(80), doc="What the rider sees: 'Visa ·· 4242', 'WeChat Pay'.")
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    removed_at: Mapped[datetime | None] = mapped_column(nullable=True)


class StripeCustomer(Base):
    """The Stripe Customer a rider's cards are saved to, made once per rider."""

    __tablename__ = "stripe_customers"

    rider_id: Mapped[str] = mapped_column(ForeignKey("riders.id"), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(80), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Payment(Base):
    """Our record of one charge, written under its key before the provider is first asked, so a retry
    finds it and asks the provider what happened instead of charging again."""

    __tablename__ = "payments"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    key: Mapped[str] = mapped_column(String(120), unique=True, doc="swap:<order id>:charge")
    order_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    rider_id: Mapped[str] = mapped_column(String(40), index=True)
    method: Mapped[str] = mapped_column(String(16))
    amount_minor: Mapped[int] = mapped_column(Integer, doc="Asked for; the captured amount once captured.")
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(
        String(16), doc="initiated | pending | authorized | captured | declined | closed"
    )
    payer: Mapped[str | None] = mapped_column(String(120), nullable=True, doc="The provider's handle for the rider.")
    provider_ref: Mapped[str | None] = mapped_column(String(80), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    captured_at: Mapped[datetime | None] = mapped_column(nullable=True, doc="When we learnt it was captured.")
    client_params: Mapped[dict[str, Any] | None] = mapped_column(
        JSON, nullable=True, doc="What the rider's app confirms a pending payment with (WeChat's JSAPI parameters)."
    )


class Refund(Base):
    """One refund our refund workflow (`refund/<id>`) follows until the money is back with the rider."""

    __tablename__ = "refunds"

    id: Mapped[str] = mapped_column(String(80), primary_key=True, doc="swap-<order id> for a failed swap's refund.")
    key: Mapped[str] = mapped_column(String(120), unique=True, doc="The current submission's key (refund:<id>[:n]).")
    payment_key: Mapped[str] = mapped_column(String(120), index=True)
    order_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    rider_id: Mapped[str] = mapped_column(String(40), index=True)
    method: Mapped[str] = mapped_column(String(16))
    amount_minor: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    reason: Mapped[str] = mapped_column(Text)
    origin: Mapped[str] = mapped_column(String(24), doc="swap_compensation | operator | complaint")
    status: Mapped[str] = mapped_column(
        String(16), index=True, doc="requested | processing | succeeded | escalated | rejected"
    )
    provider_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    provider_ref: Mapped[str | None] = mapped_column(String(80), nullable=True)
    attempt: Mapped[int] = mapped_column(Integer, default=1, doc="Submission number; a new key each.")
    submitted_at: Mapped[datetime | None] = mapped_column(nullable=True)
    expected_by: Mapped[datetime | None] = mapped_column(nullable=True, index=True)
    final_at: Mapped[datetime | None] = mapped_column(nullable=True)
    succeeded_at: Mapped[datetime | None] = mapped_column(nullable=True, doc="When the provider says it succeeded.")
    escalated: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolution: Mapped[str | None] = mapped_column(
        String(24), nullable=True, doc="How finance resolved an escalated refund (a `RefundResolution`)."
    )
    resolution_method: Mapped[str | None] = mapped_column(String(16), nullable=True, doc="A transfer's channel.")
    resolution_ref: Mapped[str | None] = mapped_column(String(120), nullable=True, doc="The transfer's reference.")
    resolution_note: Mapped[str | None] = mapped_column(Text, nullable=True)
    resolved_by: Mapped[str | None] = mapped_column(String(40), nullable=True)
    resolved_at: Mapped[datetime | None] = mapped_column(nullable=True)


class Complaint(Base):
    """A rider's complaint asking for money back; ops approve it (which starts a refund) or reject it."""

    __tablename__ = "complaints"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    rider_id: Mapped[str] = mapped_column(ForeignKey("riders.id"), index=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("swap_orders.id"), index=True)
    amount_minor: Mapped[int | None] = mapped_column(Integer, nullable=True, doc="None: all that is refundable.")
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="open", doc="open | approved")
    refund_id: Mapped[str | None] = mapped_column(String(80), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PaymentNotification(Base):
    """A verified notification from a payment provider (WeChat notify, Stripe webhook), kept once: the
    dedupe key, the provider state re-read after it, and the refund workflow it was passed to."""

    __tablename__ = "payment_notifications"
    __table_args__ = (UniqueConstraint("provider", "notification_id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    provider: Mapped[str] = mapped_column(String(16), doc="wechat | stripe")
    notification_id: Mapped[str] = mapped_column(String(80), doc="WeChat notification id / Stripe event id.")
    event_type: Mapped[str] = mapped_column(String(60))
    key: Mapped[str | None] = mapped_column(String(120), nullable=True, index=True, doc="Our charge/refund key.")
    status: Mapped[str | None] = mapped_column(String(16), nullable=True, doc="Re-read payment/refund status.")
    workflow_id: Mapped[str | None] = mapped_column(String(80), nullable=True, doc="Refund workflow signalled.")
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, doc="The verified (decrypted) notification.")
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class LedgerTransaction(Base):
    """A balanced set of postings: the postings' amounts sum to zero per currency. Immutable."""

    __tablename__ = "ledger_transactions"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    key: Mapped[str] = mapped_column(String(120), unique=True, doc="Business key, e.g. swap:<id>:charge.")
    kind: Mapped[str] = mapped_column(String(40))
    order_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    memo: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    postings: Mapped[list[LedgerPosting]] = relationship(back_populates="transaction")


class LedgerPosting(Base):
    __tablename__ = "ledger_postings"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    transaction_id: Mapped[int] = mapped_column(ForeignKey("ledger_transactions.id"), index=True)
    account: Mapped[str] = mapped_column(String(80), index=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger, doc="Debit positive, credit negative.")
    currency: Mapped[str] = mapped_column(String(3))

    transaction: Mapped[LedgerTransaction] = relationship(back_populates="postings")


class Wallet(Base):
    """A rider's prepaid balance."""

    __tablename__ = "wallets"

    rider_id: Mapped[str] = mapped_column(ForeignKey("riders.id"), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3))
    balance_minor: Mapped[int] = mapped_column(BigInteger, default=0)


class WalletEntry(Base):
    """One movement of a wallet (top-up, goodwill credit, charge, refund), once per key. Append-only.
    `payment_key` names what backs it: the settled top-up payment, `goodwill:<id>`, or the refunded charge."""

    __tablename__ = "wallet_entries"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key: Mapped[str] = mapped_column(String(120), unique=True)
    rider_id: Mapped[str] = mapped_column(ForeignKey("riders.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16), doc="topup | goodwill | charge | refund")
    amount_minor: Mapped[int] = mapped_column(BigInteger, doc="Positive: into the wallet.")
    currency: Mapped[str] = mapped_column(String(3))
    payment_key: Mapped[str | None] = mapped_column(String(120), nullable=True, index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class WalletTopUp(Base):
    """A rider's top-up: a payment collected through the rider's provider by workflow `topup/<id>`
    (our payment record is `payments` row `topup:<id>:charge`), credited to the wallet only once the
    provider confirms it."""

    __tablename__ = "wallet_top_ups"
    __table_args__ = (UniqueConstraint("rider_id", "idempotency_key"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    rider_id: Mapped[str] = mapped_column(ForeignKey("riders.id"), index=True)
    idempotency_key: Mapped[str] = mapped_column(String(60))
    method: Mapped[str] = mapped_column(String(16))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    payment_key: Mapped[str] = mapped_column(String(120), unique=True)
    status: Mapped[str] = mapped_column(String(16), index=True, doc="pending | succeeded | failed")
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    settled_at: Mapped[datetime | None] = mapped_column(nullable=True)


class GoodwillCredit(Base):
    """Money finance gives a rider without a payment (a gesture, a correction), with its reason and the
    finance operator who approved it; booked to its own ledger account."""

    __tablename__ = "goodwill_credits"
    __table_args__ = (UniqueConstraint("rider_id", "idempotency_key"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    rider_id: Mapped[str] = mapped_column(ForeignKey("riders.id"), index=True)
    idempotency_key: Mapped[str] = mapped_column(String(60))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    reason: Mapped[str] = mapped_column(Text)
    approved_by: Mapped[str] = mapped_column(String(40), doc="The operator (finance or admin) who granted it.")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SubscriptionPlan(Base):
    """N swaps per period for a price; each swap is worth `price_minor // swaps_per_period`."""

    __tablename__ = "subscription_plans"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    swaps_per_period: Mapped[int] = mapped_column(Integer)
    period_days: Mapped[int] = mapped_column(Integer)
    price_minor: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    city_code: Mapped[str | None] = mapped_column(
        ForeignKey("cities.code"), nullable=True, index=True, doc="Sold to riders of this city; None: of any city."
    )
    for_sale: Mapped[bool] = mapped_column(Boolean, default=True, doc="Riders may buy it.")


class Subscription(Base):
    """A rider's plan; periods of `period_days` follow each other from `started_at`."""

    __tablename__ = "subscriptions"

    rider_id: Mapped[str] = mapped_column(ForeignKey("riders.id"), primary_key=True)
    plan_id: Mapped[str] = mapped_column(ForeignKey("subscription_plans.id"))
    started_at: Mapped[datetime]
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    paid_until: Mapped[datetime | None] = mapped_column(
        nullable=True, doc="The end of the last period paid for; None: open-ended (sold without a payment)."
    )


class PlanPurchase(Base):
    """A rider buying a period of a plan: a payment collected through the rider's provider by workflow
    `plan_purchase/<id>` (our payment record is `payments` row `plan_purchase:<id>:charge`); the
    subscription starts or extends only once the provider confirms it. One pending per rider."""

    __tablename__ = "plan_purchases"
    __table_args__ = (
        UniqueConstraint("rider_id", "idempotency_key"),
        Index(
            "uq_plan_purchases_pending",
            "rider_id",
            unique=True,
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    rider_id: Mapped[str] = mapped_column(ForeignKey("riders.id"), index=True)
    idempotency_key: Mapped[str] = mapped_column(String(100))
    plan_id: Mapped[str] = mapped_column(ForeignKey("subscription_plans.id"))
    method: Mapped[str] = mapped_column(String(16))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    payment_key: Mapped[str] = mapped_column(String(120), unique=True)
    status: Mapped[str] = mapped_column(String(16), index=True, doc="pending | succeeded | failed")
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    settled_at: Mapped[datetime | None] = mapped_column(nullable=True)


class SubscriptionUse(Base):
    """One swap taken from a subscription period (a charge); a refund gives it back."""

    __tablename__ = "subscription_uses"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key: Mapped[str] = mapped_column(String(120), unique=True, doc="The charge's key.")
    rider_id: Mapped[str] = mapped_column(ForeignKey("riders.id"), index=True)
    period_start: Mapped[datetime]
    amount_minor: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    refund_key: Mapped[str | None] = mapped_column(String(120), nullable=True, unique=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    returned_at: Mapped[datetime | None] = mapped_column(nullable=True)


class ReconciliationRun(Base):
    """One day's comparison of our payments and refunds with one provider's statement."""

    __tablename__ = "reconciliation_runs"
    __table_args__ = (UniqueConstraint("day", "provider"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), doc="YYYY-MM-DD (UTC)")
    provider: Mapped[str] = mapped_column(String(16))
    ours: Mapped[int] = mapped_column(Integer, doc="Our movements that day.")
    theirs: Mapped[int] = mapped_column(Integer, doc="Lines in the provider's statement.")
    matched: Mapped[int] = mapped_column(Integer)
    exceptions: Mapped[int] = mapped_column(Integer)
    ran_at: Mapped[datetime] = mapped_column(default=utcnow)


class ReconciliationException(Base):
    """One difference between our record and a provider's, for finance to resolve (never fixed silently)."""

    __tablename__ = "reconciliation_exceptions"
    __table_args__ = (UniqueConstraint("day", "provider", "ref"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), index=True)
    provider: Mapped[str] = mapped_column(String(16))
    ref: Mapped[str] = mapped_column(String(160), doc="Our key, or the provider's ref when it carries none.")
    kind: Mapped[str] = mapped_column(String(32), doc="missing_at_provider | missing_in_ours | amount_mismatch")
    ours_minor: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    theirs_minor: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    detail: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="open", doc="open | resolved")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_by: Mapped[str | None] = mapped_column(String(40), nullable=True)
    resolved_at: Mapped[datetime | None] = mapped_column(nullable=True)
    resolution_note: Mapped[str | None] = mapped_column(Text, nullable=True)


class SandboxPayment(Base):
    """State of the sandbox payment provider: what a real provider would keep on its side."""

    __tablename__ = "sandbox_payments"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(120), unique=True)
    amount_minor: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16), doc="captured | declined")
    refunded_minor: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SandboxRefund(Base):
    __tablename__ = "sandbox_refunds"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(120), unique=True)
    payment_id: Mapped[str] = mapped_column(ForeignKey("sandbox_payments.id"))
    amount_minor: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), doc="processing | succeeded | closed | abnormal | failed")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    settles_at: Mapped[datetime | None] = mapped_column(nullable=True, doc="When a processing refund succeeds.")
    final_at: Mapped[datetime | None] = mapped_column(nullable=True)
