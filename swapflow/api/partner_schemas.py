"""Request and response models of the partner endpoints: partners, station hosts and city franchisees,
commission plans and their versions, plan assignments, riders' attributions, the audit trail."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from swapflow.domain.commissions import PartnerKind, Tier
from swapflow.payments.payouts import PayoutMethod

Ident = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$", description="Letters, digits, _ . -")]
CityCode = Annotated[str, Field(min_length=1, max_length=16)]
CurrencyCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
ReferralCode = Annotated[
    str, Field(pattern=r"^[A-Za-z0-9_-]{1,40}$", description="Case-insensitive: riders type it at sign-up")
]
Reason = Annotated[str, Field(max_length=2000, description="Why: kept in the audit trail")]
MinorUnits = Annotated[int, Field(ge=0, le=10**15)]
BasisPoints = Annotated[int, Field(ge=0, le=10_000)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PartnerCreate(_Request):
    id: Ident | None = Field(None, description="Default: a new id")
    kind: PartnerKind
    name: str = Field(min_length=1, max_length=200)
    parent_id: Ident | None = Field(None, description="The agent that recruited this one (agents only)")
    cities: list[CityCode] = Field(min_length=1, max_length=20)
    time_zone: str | None = Field(None, min_length=1, max_length=64, description="Default: its first city's")
    currency: CurrencyCode | None = Field(None, description="Default: its first city's; all its cities pay in it")
    referral_code: ReferralCode | None = Field(None, description="Agents only")
    payout_method: PayoutMethod
    payout_account: str | None = Field(
        None, min_length=1, max_length=120, description="WeChat openid or Stripe account"
    )
    payout_details: dict[Annotated[str, Field(max_length=40)], Annotated[str, Field(max_length=200)]] = Field(
        default_factory=dict, max_length=20, description="What a bank transfer needs (holder, bank, account number)"
    )
    active: bool = True
    reason: Reason = ""


class PartnerUpdate(_Request):
    """The fields to change; the others stay. `null` clears a parent, a referral code or a payout account
    (and changes nothing else)."""

    name: str | None = Field(None, min_length=1, max_length=200)
    parent_id: Ident | None = None
    cities: list[CityCode] | None = Field(None, min_length=1, max_length=20)
    time_zone: str | None = Field(None, min_length=1, max_length=64)
    currency: CurrencyCode | None = None
    referral_code: ReferralCode | None = None
    payout_method: PayoutMethod | None = None
    payout_account: str | None = Field(None, min_length=1, max_length=120)
    payout_details: dict[Annotated[str, Field(max_length=40)], Annotated[str, Field(max_length=200)]] | None = Field(
        None, max_length=20
    )
    active: bool | None = None
    reason: Reason = ""

    def changes(self) -> dict[str, Any]:
        """What the request changes: the fields it sets (a null only where null means something)."""
        clearable = {"parent_id", "referral_code", "payout_account"}
        return {
            field: value
            for field, value in self.model_dump(exclude_unset=True, exclude={"reason"}).items()
            if value is not None or field in clearable
        }


class PartnerView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: PartnerKind
    name: str
    parent_id: str | None
    cities: list[str]
    time_zone: str
    currency: str
    referral_code: str | None
    payout_method: str
    payout_account: str | None
    payout_details: dict[str, str]
    active: bool
    created_at: datetime


class PartnerToken(BaseModel):
    """A partner's new login token: shown this once (only its hash is kept)."""

    partner_id: str
    token: str


class PlanTerms(_Request):
    """A plan version's terms (domain `PlanVersion`): a percentage of each swap's net revenue and/or a fixed
    amount per swap, volume tiers, the overrides an agent's ancestors earn, a cap and a minimum payout."""

    effective_from: AwareDatetime
    currency: CurrencyCode
    percent_bp: BasisPoints = 0
    fixed_minor: MinorUnits = 0
    tiers: list[Tier] = Field(default_factory=list, max_length=20, description="Ascending `above_swaps`")
    overrides_bp: list[BasisPoints] = Field(
        default_factory=list,
        max_length=10,
        description="What the agent's ancestors earn of its commission, parent first",
    )
    cap_minor: MinorUnits | None = None
    minimum_payout_minor: MinorUnits = 0

    def terms(self) -> dict[str, Any]:
        return self.model_dump(exclude={"reason"})


class PlanVersionCreate(PlanTerms):
    reason: Reason = ""


class PlanCreate(_Request):
    id: Ident | None = Field(None, description="Default: a new id")
    name: str = Field(min_length=1, max_length=200)
    cadence: Literal["weekly", "monthly", "minutes"] = "monthly"
    cadence_minutes: int | None = Field(None, ge=1, le=44_640, description="With the minutes cadence only")
    terms: PlanTerms = Field(description="Version 1")
    reason: Reason = ""


class PlanVersionView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    plan_id: str
    version: int
    effective_from: datetime
    currency: str
    percent_bp: int
    fixed_minor: int
    tiers: list[Tier]
    overrides_bp: list[int]
    cap_minor: int | None
    minimum_payout_minor: int
    created_by: str = Field(description="Who prepared the version (who may not approve a run under it)")
    created_at: datetime


class PlanView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    cadence: str
    cadence_minutes: int | None
    created_by: str
    created_at: datetime
    versions: list[PlanVersionView]


class AssignmentCreate(_Request):
    plan_id: Ident
    effective_from: AwareDatetime
    reason: Reason = ""


class AssignmentView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    partner_id: str
    plan_id: str
    effective_from: datetime
    assigned_by: str
    at: datetime


class PartnerLink(_Request):
    """The partner a station, a city or a rider goes with."""

    partner_id: Ident
    reason: Reason = ""


class StationHostView(BaseModel):
    station_id: str
    partner_id: str
    city_code: str


class CityFranchiseeView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    city_code: str
    partner_id: str


class AttributionView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    rider_id: str
    partner_id: str
    source: str = Field(description="referral | admin")
    by: str | None = Field(description="The admin who set it")
    at: datetime


class AuditEventView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    actor: str
    action: str
    entity: str
    entity_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    reason: str
    at: datetime
