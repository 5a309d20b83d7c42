"""Commissions: partners (station hosts, city franchisees, channel agents in a tree), their plans and
versions, what each swap accrued to whom, and the settlement runs that freeze, approve and pay a
partner's period. The arithmetic is `swapflow/domain/commissions.py`; these tables keep its inputs and
results."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from swapflow.db.base import Base
from swapflow.domain.clock import utcnow


class Partner(Base):
    """Someone swapflow pays commissions to. `kind` is a `PartnerKind`; an agent's `parent_id` is the
    agent that recruited it. `payout_method` is wechat | stripe | bank | sandbox; `payout_account` the
    provider's handle (WeChat openid, Stripe connected account id) and `payout_details` what a bank
    transfer needs (holder, bank, account number)."""

    __tablename__ = "partners"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20), index=True)
    name: Mapped[str] = mapped_column(String(200))
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("partners.id"), nullable=True, index=True)
    cities: Mapped[list[str]] = mapped_column(JSON, default=list)
    time_zone: Mapped[str] = mapped_column(String(64), doc="Where its periods start and end (its city's zone).")
    currency: Mapped[str] = mapped_column(String(3))
    referral_code: Mapped[str | None] = mapped_column(String(40), nullable=True, unique=True)
    payout_method: Mapped[str] = mapped_column(String(16))
    payout_account: Mapped[str | None] = mapped_column(String(120), nullable=True)
    payout_details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class StationHost(Base):
    """The partner hosting a station: it earns on every swap at that station's cabinets."""

    __tablename__ = "station_hosts"

    station_id: Mapped[str] = mapped_column(ForeignKey("stations.id"), primary_key=True)
    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id"), index=True)


class CityFranchisee(Base):
    """The partner holding a city's franchise: it earns on every swap in the city."""

    __tablename__ = "city_franchisees"

    city_code: Mapped[str] = mapped_column(ForeignKey("cities.code"), primary_key=True)
    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id"), index=True)


class PartnerAttribution(Base):
    """The channel agent a rider was brought by: by referral code at sign-up, or set by an admin."""

    __tablename__ = "partner_attributions"

    rider_id: Mapped[str] = mapped_column(ForeignKey("riders.id"), primary_key=True)
    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id"), index=True)
    source: Mapped[str] = mapped_column(String(16), doc="referral | admin")
    by: Mapped[str | None] = mapped_column(String(40), nullable=True, doc="The admin who set it.")
    at: Mapped[datetime] = mapped_column(default=utcnow)


class CommissionPlan(Base):
    """A named plan; its terms are its versions. `cadence` (weekly | monthly | minutes) with
    `cadence_minutes` for the demo's short periods says how often its partners settle."""

    __tablename__ = "commission_plans"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    cadence: Mapped[str] = mapped_column(String(16), default="monthly")
    cadence_minutes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_by: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CommissionPlanVersion(Base):
    """One version of a plan's terms, in force from `effective_from` (domain `PlanVersion`). Immutable once
    used; `created_by` is who prepared it (four eyes: they may not approve a run under it)."""

    __tablename__ = "commission_plan_versions"

    plan_id: Mapped[str] = mapped_column(ForeignKey("commission_plans.id"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    effective_from: Mapped[datetime]
    currency: Mapped[str] = mapped_column(String(3))
    percent_bp: Mapped[int] = mapped_column(Integer, default=0)
    fixed_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    tiers: Mapped[list[dict[str, int]]] = mapped_column(JSON, default=list, doc="[{above_swaps, percent_bp}]")
    overrides_bp: Mapped[list[int]] = mapped_column(JSON, default=list)
    cap_minor: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    minimum_payout_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    created_by: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PlanAssignment(Base):
    """A partner on a plan from `effective_from`; the latest assignment at or before a swap applies."""

    __tablename__ = "plan_assignments"
    __table_args__ = (UniqueConstraint("partner_id", "effective_from"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id"), index=True)
    plan_id: Mapped[str] = mapped_column(ForeignKey("commission_plans.id"))
    effective_from: Mapped[datetime]
    assigned_by: Mapped[str] = mapped_column(String(40))
    at: Mapped[datetime] = mapped_column(default=utcnow)


class CommissionAccrual(Base):
    """One partner's commission on one swap (domain `Accrual`), booked with the swap's revenue. It belongs
    to at most one settlement run (`run_id`, set when a run freezes its period). A refund before that
    reverses it (`reversed_by_refund_id`, and the run never sees it); after, a clawback carries the
    reversal into the partner's next run."""

    __tablename__ = "commission_accruals"
    __table_args__ = (Index("ix_commission_accruals_partner_at", "partner_id", "at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    key: Mapped[str] = mapped_column(String(160), unique=True, doc="swap:<order>:<partner>:<kind>[:<level>]")
    order_id: Mapped[str] = mapped_column(String(40), index=True)
    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id"))
    role: Mapped[str] = mapped_column(String(20))
    kind: Mapped[str] = mapped_column(String(16), doc="percentage | fixed | override")
    level: Mapped[int | None] = mapped_column(Integer, nullable=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    plan_id: Mapped[str] = mapped_column(String(40))
    plan_version: Mapped[int] = mapped_column(Integer)
    basis_minor: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    rate_bp: Mapped[int | None] = mapped_column(Integer, nullable=True)
    at: Mapped[datetime] = mapped_column(doc="When the swap completed: the period it falls in.")
    run_id: Mapped[str | None] = mapped_column(ForeignKey("settlement_runs.id"), nullable=True, index=True)
    reversed_by_refund_id: Mapped[str | None] = mapped_column(String(80), nullable=True)
    reversed_at: Mapped[datetime | None] = mapped_column(nullable=True)


class CommissionClawback(Base):
    """The reversal of an accrual already frozen in a run, because its swap was refunded: a negative line
    in the partner's next run (`run_id`, set when that run freezes)."""

    __tablename__ = "commission_clawbacks"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    accrual_id: Mapped[int] = mapped_column(ForeignKey("commission_accruals.id"), unique=True)
    refund_id: Mapped[str] = mapped_column(String(80), index=True)
    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id"), index=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger, doc="What the accrual was: deducted next run.")
    currency: Mapped[str] = mapped_column(String(3))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    run_id: Mapped[str | None] = mapped_column(ForeignKey("settlement_runs.id"), nullable=True, index=True)


class SettlementRun(Base):
    """One partner's period, settled by workflow `settlement/<partner>/<period>`: frozen, computed,
    approved by finance (four eyes), paid. Once per partner and period.

    status: computing | awaiting_approval | rejected | approved | paying | paid | payout_failed | nothing_due
    """

    __tablename__ = "settlement_runs"
    __table_args__ = (UniqueConstraint("partner_id", "period_start"),)

    id: Mapped[str] = mapped_column(String(80), primary_key=True, doc="<partner>:<period label>")
    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id"), index=True)
    city_code: Mapped[str | None] = mapped_column(String(16), nullable=True, index=True, doc="The partner's city.")
    period_label: Mapped[str] = mapped_column(String(40), doc="2026-12, 2026-W49, 2026-12-07T14:30")
    period_start: Mapped[datetime]
    period_end: Mapped[datetime]
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(20), index=True)
    workflow_id: Mapped[str] = mapped_column(String(120))
    revision: Mapped[int] = mapped_column(Integer, default=1, doc="Bumped by each recompute after a rejection.")
    plan_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    plan_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    accruals_count: Mapped[int] = mapped_column(Integer, default=0)
    carried_in_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    total_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    carry_forward_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    prepared_by: Mapped[str] = mapped_column(String(40), doc="Who started it: 'schedule' or an account id.")
    approved_by: Mapped[str | None] = mapped_column(String(40), nullable=True)
    approved_at: Mapped[datetime | None] = mapped_column(nullable=True)
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SettlementLine(Base):
    """One line of a run's statement (domain `StatementLine`), in statement order."""

    __tablename__ = "settlement_lines"
    __table_args__ = (UniqueConstraint("run_id", "position"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("settlement_runs.id"))
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(20))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    label: Mapped[str] = mapped_column(String(200))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, doc="The rest of the domain line.")


class SettlementDecision(Base):
    """A finance decision on a run: approve or reject (with a reason), by whom, on which revision."""

    __tablename__ = "settlement_decisions"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("settlement_runs.id"), index=True)
    revision: Mapped[int] = mapped_column(Integer)
    decision: Mapped[str] = mapped_column(String(16), doc="approved | rejected")
    by: Mapped[str] = mapped_column(String(40))
    reason: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(default=utcnow)


class PartnerPayout(Base):
    """One attempt to pay a run (`key` = settlement:<run>:payout[:<attempt>], the provider's idempotency
    key): submitted, followed until final. A run is paid by at most one succeeded payout.

    status: submitted | processing | awaiting_bank | succeeded | failed | returned
    """

    __tablename__ = "partner_payouts"
    __table_args__ = (UniqueConstraint("run_id", "attempt"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    key: Mapped[str] = mapped_column(String(160), unique=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("settlement_runs.id"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    partner_id: Mapped[str] = mapped_column(ForeignKey("partners.id"), index=True)
    method: Mapped[str] = mapped_column(String(16))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16), index=True)
    provider_ref: Mapped[str | None] = mapped_column(String(120), nullable=True)
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    final_at: Mapped[datetime | None] = mapped_column(nullable=True)
    paid_by: Mapped[str | None] = mapped_column(String(40), nullable=True, doc="Who marked a bank transfer paid.")


class SandboxPayout(Base):
    """State of the sandbox payout provider: what a real provider keeps of a transfer on its side."""

    __tablename__ = "sandbox_payouts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(160), unique=True)
    account: Mapped[str | None] = mapped_column(String(120), nullable=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16), doc="processing | succeeded | failed")
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    settles_at: Mapped[datetime | None] = mapped_column(nullable=True)
