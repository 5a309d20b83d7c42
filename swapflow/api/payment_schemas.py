"""Request and response models of the money endpoints: wallet top-ups, refunds, complaints, finance."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from swapflow.db.money import Refund, WalletTopUp
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

    @classmethod
    def of(cls, top_up: WalletTopUp) -> TopUpView:
        return cls.model_validate(
            {
                **{name: getattr(top_up, name) for name in cls.model_fields if name != "workflow_id"},
                "workflow_id": top_up_workflow_id(top_up.id),
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
