"""Request and response models of the settlement endpoints: finance's runs (`/v1/finance/settlements`)
and a partner's own statements (`/v1/partner/statements`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from swapflow.services.settlement_statements import RunDetail
from swapflow.workflows.settlement_contract import RunStatus

STATUS_DESCRIPTION = (
    "computing | awaiting_approval (finance approves or rejects) | rejected (waits for a recompute) | approved "
    "| paying (a payout is out) | paid | payout_failed (still owed; finance may retry) | nothing_due"
)


class SettlementRunSummary(BaseModel):
    """A run in a listing."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    partner_id: str
    city_code: str | None
    period_label: str
    period_start: datetime
    period_end: datetime = Field(description="Exclusive.")
    status: RunStatus = Field(description=STATUS_DESCRIPTION)
    revision: int = Field(description="1, bumped by each recompute after a rejection.")
    currency: str
    total_minor: int = Field(description="What is paid: the sum of the statement's lines.")
    carry_forward_minor: int = Field(description="What the next period carries in.")
    workflow_id: str
    created_at: datetime
    updated_at: datetime


class SettlementRunPage(BaseModel):
    items: list[SettlementRunSummary]
    next_cursor: str | None = Field(description="Send as `cursor` for the next page; null: this is the last.")


class SettlementPartnerView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    kind: str
    payout_method: str


class SettlementLineView(BaseModel):
    """One line of the statement (the lines add up to the run's total)."""

    model_config = ConfigDict(from_attributes=True)

    position: int
    kind: str = Field(description="accruals | tier_adjustment | cap | clawback | carried_in | carry_forward")
    label: str
    amount_minor: int
    detail: dict[str, Any] = Field(
        description="The line's particulars: accrual_kind, plan_id, plan_version, rate_bp, swaps, basis_minor, "
        "swap_id and refund_id where it has them."
    )


class SettlementDecisionView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    revision: int = Field(description="The revision of the statement decided on.")
    decision: str = Field(description="approved | rejected")
    by: str
    reason: str
    at: datetime


class PayoutView(BaseModel):
    """One attempt to pay the run."""

    model_config = ConfigDict(from_attributes=True)

    attempt: int
    key: str = Field(description="The provider's idempotency key: one per attempt.")
    method: str
    amount_minor: int
    currency: str
    status: str = Field(description="submitted | processing | awaiting_bank | succeeded | failed | returned")
    provider_ref: str | None = Field(description="The provider's (or, for a bank transfer, the bank's) reference.")
    failure_reason: str | None
    created_at: datetime
    final_at: datetime | None
    paid_by: str | None = Field(description="Who marked a bank transfer paid.")


class SettlementRunDetail(SettlementRunSummary):
    """A run as finance reads it: header, totals, decisions, payouts and the statement's lines."""

    partner: SettlementPartnerView
    plan_id: str | None = Field(description="The plan version whose cap and minimum payout applied.")
    plan_version: int | None
    accruals_count: int
    carried_in_minor: int
    prepared_by: str = Field(description="'schedule', or the account that started the run.")
    approved_by: str | None
    approved_at: datetime | None
    failure_reason: str | None
    decisions: list[SettlementDecisionView] = Field(description="Approvals and rejections, oldest first.")
    payouts: list[PayoutView] = Field(description="Payout attempts, oldest first.")
    lines: list[SettlementLineView]

    @classmethod
    def of(cls, detail: RunDetail) -> SettlementRunDetail:
        return cls.model_validate(
            {
                **{name: getattr(detail.run, name) for name in cls.model_fields if hasattr(detail.run, name)},
                "partner": detail.partner,
                "decisions": detail.decisions,
                "payouts": detail.payouts,
                "lines": detail.lines,
            }
        )


class PartnerStatementSummary(BaseModel):
    """One of a partner's statements in its listing."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    period_label: str
    period_start: datetime
    period_end: datetime = Field(description="Exclusive.")
    status: RunStatus = Field(description="approved | paying | paid | payout_failed | nothing_due")
    currency: str
    total_minor: int = Field(description="What is paid: the sum of the statement's lines.")
    carry_forward_minor: int = Field(description="What the next period carries in.")


class PartnerStatementPage(BaseModel):
    items: list[PartnerStatementSummary]
    next_cursor: str | None = Field(description="Send as `cursor` for the next page; null: this is the last.")


class PartnerPayoutView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    attempt: int
    method: str
    amount_minor: int
    currency: str
    status: str = Field(description="submitted | processing | awaiting_bank | succeeded | failed | returned")
    provider_ref: str | None
    failure_reason: str | None
    created_at: datetime
    final_at: datetime | None


class PartnerStatementView(PartnerStatementSummary):
    """A partner's statement: its lines and how it is being paid."""

    plan_id: str | None
    plan_version: int | None
    accruals_count: int
    carried_in_minor: int
    payouts: list[PartnerPayoutView]
    lines: list[SettlementLineView]

    @classmethod
    def of(cls, detail: RunDetail) -> PartnerStatementView:
        return cls.model_validate(
            {
                **{name: getattr(detail.run, name) for name in cls.model_fields if hasattr(detail.run, name)},
                "payouts": detail.payouts,
                "lines": detail.lines,
            }
        )


class RejectBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000, description="What is to be corrected before a recompute.")


class BankPaid(BaseModel):
    """The bank transfer went through."""

    model_config = ConfigDict(extra="forbid")

    outcome: Literal["paid"]
    reference: str = Field(min_length=1, max_length=120, description="The bank's reference of the transfer.")


class BankReturned(BaseModel):
    """The bank transfer came back: the run's payout failed and the amount stays owed."""

    model_config = ConfigDict(extra="forbid")

    outcome: Literal["returned"]
    reason: str = Field(min_length=1, max_length=2000, description="Why the bank returned it.")


BankResultBody = Annotated[BankPaid | BankReturned, Field(discriminator="outcome")]


class SettlementStateView(BaseModel):
    """The run as its workflow answers an action."""

    run_id: str
    status: RunStatus = Field(description=STATUS_DESCRIPTION)
    revision: int
    total_minor: int
    currency: str
    prepared_by: str
    payout_attempt: int = Field(description="How many payouts were attempted (0: none yet).")
    payout_status: str | None
    failure_reason: str | None
    workflow_id: str
