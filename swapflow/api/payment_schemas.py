"""Request and response models of the money endpoints: wallet top-ups, refunds, complaints, finance,
payment methods, plans."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from swapflow.db.money import PlanPurchase, Refund, WalletTopUp
from swapflow.workflows.plan_purchase_contract import plan_purchase_workflow_id
from swapflow.workflows.refund_contract import refund_workflow_id
from swapflow.workflows.topup_contract import top_up_workflow_id


class TopUpCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount_minor: int = Field(gt=0, le=10_000_000, description="Minor units, in the rider's city currency.")


class WalletView(BaseModel):
    rider_id: str
    currency: str
    balance_minor: int


class TopUpView(BaseModel):
    """A top-up: a payment through the rider's provider, credited to the wallet once it is captured."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    rider_id: str
    method: str = Field(description="The provider the money is collected through.")
    amount_minor: int
    currency: str
    status: str = Field(description="pending (not credited yet) | succeeded (credited) | failed (nothing taken)")
    failure_reason: str | None
    created_at: datetime
    settled_at: datetime | None
    workflow_id: str
    client_params: dict[str, str] | None = Field(
        None, description="While pending: what the app confirms the payment with (WeChat Pay: wx.requestPayment's)."
    )

    @classmethod
    def of(cls, top_up: WalletTopUp, client_params: dict[str, str] | None = None) -> TopUpView:
        own = ("workflow_id", "client_params")
        return cls.model_validate(
            {
                **{name: getattr(top_up, name) for name in cls.model_fields if name not in own},
                "workflow_id": top_up_workflow_id(top_up.id),
                "client_params": client_params,
            }
        )


class GoodwillCreate(BaseModel):
    """Finance's credit of a rider's wallet without a payment."""

    model_config = ConfigDict(extra="forbid")

    amount_minor: int = Field(gt=0, le=10_000_000, description="Minor units, in the rider's city currency.")
    reason: str = Field(min_length=1, max_length=500)


class GoodwillView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    rider_id: str
    amount_minor: int
    currency: str
    reason: str
    approved_by: str
    created_at: datetime


class RefundCreate(BaseModel):
    """An operator's refund of (part of) a swap's capture."""

    model_config = ConfigDict(extra="forbid")

    order_id: str = Field(min_length=1, max_length=40)
    amount_minor: int | None = Field(None, gt=0, le=2**31 - 1, description="Default: all that is left of the capture.")
    reason: str = Field(min_length=1, max_length=500)


class RefundView(BaseModel):
    """A refund as the rider and finance see it: where the money is and when it should arrive."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    order_id: str | None
    rider_id: str
    method: str
    amount_minor: int
    currency: str
    reason: str
    origin: str
    status: str = Field(description="requested | processing | succeeded | escalated")
    provider_status: str | None
    attempt: int = Field(description="Submission number: a refund the provider closed is resubmitted.")
    submitted_at: datetime | None
    expected_by: datetime | None = Field(description="When the money should have arrived at the latest.")
    final_at: datetime | None
    escalated: bool
    resolution: str | None = Field(
        description="How finance resolved it once escalated: resubmitted | paid_by_transfer | refunded_offline"
    )
    resolution_method: str | None = Field(
        description="The transfer's channel (bank, wechat, stripe), or the provider's"
    )
    resolution_ref: str | None = Field(description="The transfer's or the offline refund's reference")
    resolution_note: str | None
    resolved_by: str | None
    resolved_at: datetime | None
    workflow_id: str

    @classmethod
    def of(cls, refund: Refund) -> RefundView:
        return cls(
            **{name: getattr(refund, name) for name in cls.model_fields if name != "workflow_id"},
            workflow_id=refund_workflow_id(refund.id),
        )


class ComplaintCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rider_id: str = Field(min_length=1, max_length=40)
    order_id: str = Field(min_length=1, max_length=40)
    reason: str = Field(min_length=1, max_length=2000)
    amount_minor: int | None = Field(None, gt=0, le=2**31 - 1, description="Default: all that is left of the capture.")


class ComplaintView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    rider_id: str
    order_id: str
    reason: str
    amount_minor: int | None
    status: str
    refund_id: str | None
    created_at: datetime


class ReconciliationRunView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    provider: str
    ours: int
    theirs: int
    matched: int
    exceptions: int
    ran_at: datetime


class ReconciliationExceptionView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    provider: str
    ref: str
    kind: str
    ours_minor: int | None
    theirs_minor: int | None
    detail: str
    status: str = Field(description="open | resolved")
    resolved_by: str | None
    resolved_at: datetime | None
    resolution_note: str | None


class ReconciliationView(BaseModel):
    day: str
    runs: list[ReconciliationRunView]
    exceptions: list[ReconciliationExceptionView]


class Resolution(BaseModel):
    """Finance's word on what it did, kept with the record and in the audit trail."""

    model_config = ConfigDict(extra="forbid")

    note: str = Field(min_length=1, max_length=2000)


class RefundResubmit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field("", max_length=2000)


class RefundTransfer(BaseModel):
    """Finance paid the rider an escalated refund another way."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["bank", "wechat", "stripe"] = Field(description="Where the money left from")
    reference: str = Field(min_length=1, max_length=120, description="The transfer's reference")
    note: str = Field("", max_length=2000)


class RefundOffline(BaseModel):
    """An escalated refund returned outside swapflow through its provider (its merchant portal)."""

    model_config = ConfigDict(extra="forbid")

    reference: str = Field(min_length=1, max_length=120, description="The provider's reference")
    note: str = Field("", max_length=2000)


class PaymentMethodView(BaseModel):
    """One way a rider pays; swaps, top-ups and plans are charged through the default one."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    method: str = Field(description="wechat | stripe | wallet | subscription | sandbox")
    label: str = Field(description="What the rider sees: 'Visa ·· 4242', 'WeChat Pay'.")
    is_default: bool
    created_at: datetime


class CardSetupView(BaseModel):
    """What the rider's page confirms a new card with: Stripe.js `confirmCardSetup(client_secret)` with
    `publishable_key`, then `POST …/payment-methods/stripe` with `setup_intent_id`."""

    setup_intent_id: str
    client_secret: str
    publishable_key: str


class CardSave(BaseModel):
    model_config = ConfigDict(extra="forbid")

    setup_intent_id: str = Field(min_length=1, max_length=80, description="The SetupIntent the page confirmed.")


class PlanView(BaseModel):
    """A plan on sale: N swaps a period for a price."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    city_code: str | None = Field(description="Sold in this city; null: in every city of its currency.")
    swaps_per_period: int
    period_days: int
    price_minor: int
    currency: str


class PlanPurchaseCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plan_id: str = Field(min_length=1, max_length=40)


class PlanPurchaseView(BaseModel):
    """A rider buying a period of a plan: a payment through the rider's provider; the plan runs once it is
    captured."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    rider_id: str
    plan_id: str
    method: str = Field(description="The provider the money is collected through.")
    amount_minor: int
    currency: str
    status: str = Field(description="pending (no plan yet) | succeeded (the plan runs) | failed (nothing taken)")
    failure_reason: str | None
    created_at: datetime
    settled_at: datetime | None
    workflow_id: str
    client_params: dict[str, str] | None = Field(
        None, description="While pending: what the app confirms the payment with (WeChat Pay: wx.requestPayment's)."
    )

    @classmethod
    def of(cls, purchase: PlanPurchase, client_params: dict[str, str] | None = None) -> PlanPurchaseView:
        own = ("workflow_id", "client_params")
        return cls.model_validate(
            {
                **{name: getattr(purchase, name) for name in cls.model_fields if name not in own},
                "workflow_id": plan_purchase_workflow_id(purchase.id),
                "client_params": client_params,
            }
        )


class SubscriptionView(BaseModel):
    """Where a rider's plan stands: its current period (the last, once ended) and the swaps used and left."""

    plan: PlanView
    status: str = Field(description="active | expired (its paid periods are over) | inactive")
    started_at: datetime
    paid_until: datetime | None = Field(description="The end of the last period paid for; null: no end.")
    period_start: datetime
    period_end: datetime
    swaps_used: int
    swaps_left: int


class WalletEntryView(BaseModel):
    """One movement of a wallet: positive into it (top-up, goodwill, refund), negative out (a swap's charge)."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: str = Field(description="topup | goodwill | charge | refund")
    amount_minor: int
    currency: str
    at: datetime


class WalletEntryPage(BaseModel):
    items: list[WalletEntryView]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: this was the last.")


class RefundPage(BaseModel):
    items: list[RefundView]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: this was the last.")
