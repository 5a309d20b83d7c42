"""What partners earn on swaps: commission plans, the accrual of one completed swap, and the statement of
one partner and period. Pure: no I/O, no clock (times are arguments).

Partners are station hosts (earn on swaps at their station), city franchisees (on their city's swaps)
and channel agents (on the swaps of riders attributed to them), agents forming a tree by `parent_id`.
A partner is on a plan whose versions are effective-dated: a swap accrues under the version in force at
its completion (the latest `effective_from` at or before it; on a tie, the higher version).

Accrual, per swap and partner, each a separate line:

- percentage: `percent_bp` of the swap's net revenue (every partner's percentage is of the whole net
  revenue, not of what other partners leave);
- fixed: `fixed_minor` per swap;
- override: the agent the rider is attributed to has a plan whose `overrides_bp[k]` is what its
  ancestor k+1 levels up earns, as a percentage of that agent's own commission on the swap (percentage
  plus fixed). The depth is the tuple's length; each level is of the agent's commission, not of the
  level below's override, so rounding never compounds up the tree.

The statement of a partner and period, lines in this order, totalling exactly what is paid:

1. accruals, summed per kind and plan version (sums of integers: no rounding);
2. volume tiers, **marginal**: the period's swaps are numbered by completion time (then swap id), and
   swap n earns the rate of the highest tier with `above_swaps` < n under its own plan version (5 % up
   to 1,000 swaps, 7 % above: swaps 1..1000 at 5 %, swaps 1001.. at 7 %; no cliff at the threshold).
   Swaps accrued at the plan's base rate, so each tier is an adjustment line: (tier rate − base rate)
   of the net revenue of the swaps in it;
3. cap: what the period earned (accruals and tiers) above the plan's cap is cut by a negative line, and
   is not carried forward;
4. clawbacks: each reversed accrual of a refunded swap from a settled period, pointing at its refund (the
   accrual as accrued: the settled period's tier and cap lines stand);
5. carried in: the previous statement's carry-forward;
6. carry forward: if the sum so far is below the minimum payout, or negative (clawbacks exceeding what
   was earned), a line takes it all out to the next period and nothing is paid.

The cap and the minimum payout are those of the partner's plan version in force at the period's end.

Rounding: money is integer minor units of one currency; a percentage moves `percent_of` (pricing's rule:
half up in magnitude, to a whole minor unit), applied once per line: per swap for a percentage and an
override accrual, once per tier and plan version for a tier adjustment. Every other line is an exact
integer, so the lines sum exactly to the total. Amounts of different currencies are never mixed: doing
so raises `CurrencyMismatch`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from swapflow.domain.checks import present
from swapflow.domain.pricing import BASIS_POINTS, percent_of


class CurrencyMismatch(ValueError):
    """Amounts of two currencies met in one computation: a plan, swap or statement set up wrongly."""


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("a time here must carry its timezone")
    return value


Instant = Annotated[datetime, AfterValidator(_aware)]
Currency = Annotated[str, Field(min_length=3, max_length=3)]
BasisPoints = Annotated[int, Field(ge=0, le=BASIS_POINTS)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PartnerKind(StrEnum):
    """Who a partner is, and so in which role it earns on a swap."""

    STATION_HOST = "station_host"
    CITY_FRANCHISEE = "city_franchisee"
    CHANNEL_AGENT = "channel_agent"


class Partner(_Model):
    id: str = Field(min_length=1)
    kind: PartnerKind
    parent_id: str | None = Field(None, description="The agent that recruited this one (agents only)")

    @model_validator(mode="after")
    def _parent_of_agents_only(self) -> Partner:
        if self.parent_id is not None and self.kind != PartnerKind.CHANNEL_AGENT:
            raise ValueError("only a channel agent has a parent")
        if self.parent_id == self.id:
            raise ValueError("an agent is not its own parent")
        return self


class Tier(_Model):
    """From the swap after `above_swaps` in a period on, a swap earns `percent_bp` instead of the base rate."""

    above_swaps: int = Field(ge=1)
    percent_bp: BasisPoints


class PlanVersion(_Model):
    """One version of a commission plan: its terms from `effective_from` until a later version's."""

    plan_id: str = Field(min_length=1)
    version: int = Field(ge=1)
    effective_from: Instant
    currency: Currency
    percent_bp: BasisPoints = 0
    fixed_minor: int = Field(0, ge=0, description="Per swap")
    tiers: tuple[Tier, ...] = Field((), description="Ascending `above_swaps`")
    overrides_bp: tuple[BasisPoints, ...] = Field(
        (), description="For an agent's plan: what its ancestors earn of its commission, parent first"
    )
    cap_minor: int | None = Field(None, ge=0, description="Most a period earns; None: no cap")
    minimum_payout_minor: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _tiers_ascending(self) -> PlanVersion:
        thresholds = [tier.above_swaps for tier in self.tiers]
        if thresholds != sorted(set(thresholds)):
            raise ValueError("tiers ascend strictly by above_swaps")
        return self

    def rate_of_swap(self, number: int) -> int:
        """The percentage (basis points) the `number`th swap of a period earns (numbered from 1)."""
        rate = self.percent_bp
        for tier in self.tiers:
            if number > tier.above_swaps:
                rate = tier.percent_bp
        return rate


def plan_in_force(versions: Iterable[PlanVersion], at: datetime) -> PlanVersion | None:
    """The version in force at `at`: the latest effective at or before it (the higher version on a tie)."""
    effective = [plan for plan in versions if plan.effective_from <= at]
    return max(effective, key=lambda plan: (plan.effective_from, plan.version), default=None)


class CompletedSwap(_Model):
    id: str = Field(min_length=1)
    completed_at: Instant
    net_revenue_minor: int = Field(ge=0, description="What the swap earned, net of discounts and refunds")
    currency: Currency


class AccrualKind(StrEnum):
    PERCENTAGE = "percentage"  # basis: the swap's net revenue
    FIXED = "fixed"  # no basis: an amount per swap
    OVERRIDE = "override"  # basis: the attributed agent's commission on the swap


class Accrual(_Model):
    """One partner's commission on one swap, under one plan version."""

    swap_id: str
    at: Instant = Field(description="When the swap completed")
    partner_id: str
    role: PartnerKind
    kind: AccrualKind
    amount_minor: int
    currency: Currency
    plan_id: str
    plan_version: int
    basis_minor: int | None = Field(description="What the rate was applied to (None for a fixed amount)")
    rate_bp: int | None = Field(description="The rate applied (None for a fixed amount)")
    level: int | None = Field(None, description="For an override: 1 for the agent's parent, 2 above it, …")


def _same_currency(expected: str, actual: str, what: str) -> None:
    if actual != expected:
        raise CurrencyMismatch(f"{what} is in {actual}, expected {expected}")


def _direct(swap: CompletedSwap, partner: Partner, role: PartnerKind, plan: PlanVersion) -> list[Accrual]:
    def line(kind: AccrualKind, amount: int, basis: int | None, rate: int | None) -> Accrual:
        return Accrual(
            swap_id=swap.id,
            at=swap.completed_at,
            partner_id=partner.id,
            role=role,
            kind=kind,
            amount_minor=amount,
            currency=swap.currency,
            plan_id=plan.plan_id,
            plan_version=plan.version,
            basis_minor=basis,
            rate_bp=rate,
        )

    lines = []
    # A tiered plan's swaps count towards its volume even at a base rate of 0, so they accrue a line.
    if plan.percent_bp or plan.tiers:
        amount = percent_of(swap.net_revenue_minor, plan.percent_bp)
        lines.append(line(AccrualKind.PERCENTAGE, amount, swap.net_revenue_minor, plan.percent_bp))
    if plan.fixed_minor:
        lines.append(line(AccrualKind.FIXED, plan.fixed_minor, None, None))
    return lines


def _check_chain(agents: Sequence[Partner]) -> None:
    for agent in agents:
        if agent.kind != PartnerKind.CHANNEL_AGENT:
            raise ValueError(f"partner {agent.id} in an agent chain is a {agent.kind}")
    for child, parent in zip(agents, agents[1:], strict=False):
        if child.parent_id != parent.id:
            raise ValueError(f"agent {parent.id} is not the parent of agent {child.id}")


def accrue(
    swap: CompletedSwap,
    *,
    host: Partner | None,
    franchisee: Partner | None,
    agents: Sequence[Partner],
    plans: Mapping[str, Sequence[PlanVersion]],
) -> tuple[Accrual, ...]:
    """The commissions one completed swap accrues: its station's host, its city's franchisee, and the
    agent the rider is attributed to (`agents[0]`) with its ancestors (`agents[1:]`, parent first, as far
    up as known). `plans` holds each partner's plan versions; a partner with none in force earns nothing
    directly (an ancestor's override comes from the attributed agent's plan, not its own)."""
    if host is not None and host.kind != PartnerKind.STATION_HOST:
        raise ValueError(f"the host {host.id} is a {host.kind}")
    if franchisee is not None and franchisee.kind != PartnerKind.CITY_FRANCHISEE:
        raise ValueError(f"the franchisee {franchisee.id} is a {franchisee.kind}")
    _check_chain(agents)

    def in_force(partner: Partner) -> PlanVersion | None:
        plan = plan_in_force(plans.get(partner.id, ()), swap.completed_at)
        if plan is not None:
            _same_currency(swap.currency, plan.currency, f"plan {plan.plan_id} v{plan.version}")
        return plan

    lines: list[Accrual] = []
    for partner, role in ((host, PartnerKind.STATION_HOST), (franchisee, PartnerKind.CITY_FRANCHISEE)):
        plan = in_force(partner) if partner is not None else None
        if partner is not None and plan is not None:
            lines.extend(_direct(swap, partner, role, plan))
    if not agents:
        return tuple(lines)

    agent, ancestors = agents[0], agents[1:]
    plan = in_force(agent)
    if plan is None:
        return tuple(lines)
    own = _direct(swap, agent, PartnerKind.CHANNEL_AGENT, plan)
    lines.extend(own)
    commission = sum(line.amount_minor for line in own)
    for level, (ancestor, rate) in enumerate(zip(ancestors, plan.overrides_bp, strict=False), start=1):
        lines.append(
            Accrual(
                swap_id=swap.id,
                at=swap.completed_at,
                partner_id=ancestor.id,
                role=PartnerKind.CHANNEL_AGENT,
                kind=AccrualKind.OVERRIDE,
                amount_minor=percent_of(commission, rate),
                currency=swap.currency,
                plan_id=plan.plan_id,
                plan_version=plan.version,
                basis_minor=commission,
                rate_bp=rate,
                level=level,
            )
        )
    return tuple(lines)


class Period(_Model):
    """A settlement period, [start, end)."""

    start: Instant
    end: Instant

    @model_validator(mode="after")
    def _ordered(self) -> Period:
        if self.end <= self.start:
            raise ValueError("a period ends after it starts")
        return self

    def __contains__(self, at: datetime) -> bool:
        return self.start <= at < self.end


class Clawback(_Model):
    """An accrual of a settled period reversed because its swap was refunded."""

    accrual: Accrual
    refund_id: str = Field(min_length=1)


class LineKind(StrEnum):
    ACCRUALS = "accruals"
    TIER_ADJUSTMENT = "tier_adjustment"
    CAP = "cap"
    CLAWBACK = "clawback"
    CARRIED_IN = "carried_in"
    CARRY_FORWARD = "carry_forward"


class StatementLine(_Model):
    kind: LineKind
    amount_minor: int
    label: str
    accrual_kind: AccrualKind | None = None
    plan_id: str | None = None
    plan_version: int | None = None
    rate_bp: int | None = None
    swaps: int | None = Field(None, description="How many swaps the line covers")
    basis_minor: int | None = Field(None, description="What a percentage line's rate applies to, summed")
    swap_id: str | None = None
    refund_id: str | None = None


class Statement(_Model):
    partner_id: str
    period: Period
    currency: Currency
    plan_id: str | None = Field(description="The plan whose cap and minimum payout applied")
    plan_version: int | None
    lines: tuple[StatementLine, ...]
    total_minor: int = Field(ge=0, description="What is paid: the sum of the lines")
    carry_forward_minor: int = Field(description="What the next period's statement carries in")

    @model_validator(mode="after")
    def _lines_add_up(self) -> Statement:
        if sum(line.amount_minor for line in self.lines) != self.total_minor:
            raise ValueError("a statement's lines add up to its total")
        return self


_GroupKey = tuple[AccrualKind, str, int, int | None, int | None]
"""Accruals summed into one statement line: kind, plan id and version, rate, override level."""


def _group_order(item: tuple[_GroupKey, list[Accrual]]) -> tuple[str, str, int, int, int]:
    kind, plan_id, version, rate, level = item[0]
    return (kind, plan_id, version, rate or 0, level or 0)


def _accrual_lines(accruals: Sequence[Accrual]) -> list[StatementLine]:
    groups: dict[_GroupKey, list[Accrual]] = {}
    for accrual in accruals:
        key = (accrual.kind, accrual.plan_id, accrual.plan_version, accrual.rate_bp, accrual.level)
        groups.setdefault(key, []).append(accrual)
    lines = []
    for (kind, plan_id, version, rate, level), group in sorted(groups.items(), key=_group_order):
        label = f"{kind} accruals" if level is None else f"override accruals, level {level}"
        bases = [accrual.basis_minor for accrual in group if accrual.basis_minor is not None]
        lines.append(
            StatementLine(
                kind=LineKind.ACCRUALS,
                amount_minor=sum(accrual.amount_minor for accrual in group),
                label=label,
                accrual_kind=kind,
                plan_id=plan_id,
                plan_version=version,
                rate_bp=rate,
                swaps=len({accrual.swap_id for accrual in group}),
                basis_minor=sum(bases) if kind != AccrualKind.FIXED else None,
            )
        )
    return lines


def _tier_lines(accruals: Sequence[Accrual], versions: Mapping[tuple[str, int], PlanVersion]) -> list[StatementLine]:
    percentage = [accrual for accrual in accruals if accrual.kind == AccrualKind.PERCENTAGE]
    # A swap the partner earns on twice (host and franchisee at once) is still one swap of its volume.
    order = sorted({(accrual.at, accrual.swap_id) for accrual in percentage})
    number = {swap_id: n for n, (_, swap_id) in enumerate(order, start=1)}
    tiered: dict[tuple[str, int, int], list[Accrual]] = {}
    for accrual in percentage:
        key = (accrual.plan_id, accrual.plan_version)
        plan = present(versions.get(key), f"plan {accrual.plan_id} v{accrual.plan_version}")
        rate = plan.rate_of_swap(number[accrual.swap_id])
        if rate != plan.percent_bp:
            tiered.setdefault((*key, rate), []).append(accrual)
    lines = []
    for (plan_id, version, rate), group in sorted(tiered.items()):
        uplift = rate - versions[(plan_id, version)].percent_bp
        basis = sum(present(accrual.basis_minor, "a percentage's basis") for accrual in group)
        lines.append(
            StatementLine(
                kind=LineKind.TIER_ADJUSTMENT,
                amount_minor=percent_of(basis, uplift),
                label=f"volume tier at {rate} bp",
                plan_id=plan_id,
                plan_version=version,
                rate_bp=uplift,
                swaps=len({accrual.swap_id for accrual in group}),
                basis_minor=basis,
            )
        )
    return lines


def statement(
    partner_id: str,
    period: Period,
    *,
    currency: str,
    accruals: Sequence[Accrual],
    clawbacks: Sequence[Clawback] = (),
    carried_in_minor: int = 0,
    plans: Sequence[PlanVersion],
) -> Statement:
    """The statement of one partner for one period: `accruals` are the partner's accruals of swaps
    completed in the period, `clawbacks` its reversed accruals from settled periods, `carried_in_minor`
    the previous statement's `carry_forward_minor`, and `plans` every plan version its accruals name
    (with the one in force at the period's end, whose cap and minimum payout apply)."""
    for plan in plans:
        _same_currency(currency, plan.currency, f"plan {plan.plan_id} v{plan.version}")
    for accrual in [*accruals, *(clawback.accrual for clawback in clawbacks)]:
        _same_currency(currency, accrual.currency, f"the accrual of swap {accrual.swap_id}")
        if accrual.partner_id != partner_id:
            raise ValueError(f"the accrual of swap {accrual.swap_id} is partner {accrual.partner_id}'s")
    for accrual in accruals:
        if accrual.at not in period:
            raise ValueError(f"swap {accrual.swap_id} completed outside the period")
    for clawback in clawbacks:
        # A refund within the period removes its accrual instead: only a settled one is clawed back.
        if clawback.accrual.at >= period.start:
            raise ValueError(f"swap {clawback.accrual.swap_id} was not in a settled period")

    versions = {(plan.plan_id, plan.version): plan for plan in plans}
    lines = _accrual_lines(accruals) + _tier_lines(accruals, versions)

    # The period's end is exclusive: the terms are those of the version in force just before it.
    terms = plan_in_force((plan for plan in plans if plan.effective_from < period.end), period.end)
    earned = sum(line.amount_minor for line in lines)
    if terms is not None and terms.cap_minor is not None and earned > terms.cap_minor:
        lines.append(
            StatementLine(kind=LineKind.CAP, amount_minor=terms.cap_minor - earned, label=f"cap {terms.cap_minor}")
        )

    for clawback in clawbacks:
        lines.append(
            StatementLine(
                kind=LineKind.CLAWBACK,
                amount_minor=-clawback.accrual.amount_minor,
                label=f"clawback of swap {clawback.accrual.swap_id}, refunded",
                accrual_kind=clawback.accrual.kind,
                plan_id=clawback.accrual.plan_id,
                plan_version=clawback.accrual.plan_version,
                swap_id=clawback.accrual.swap_id,
                refund_id=clawback.refund_id,
            )
        )
    if carried_in_minor:
        lines.append(StatementLine(kind=LineKind.CARRIED_IN, amount_minor=carried_in_minor, label="carried in"))

    due = sum(line.amount_minor for line in lines)
    minimum = terms.minimum_payout_minor if terms is not None else 0
    carried = due if due < 0 or due < minimum else 0
    if carried:
        label = f"below the minimum payout {minimum}" if due > 0 else "owed back: deducted next period"
        lines.append(StatementLine(kind=LineKind.CARRY_FORWARD, amount_minor=-carried, label=label))
    return Statement(
        partner_id=partner_id,
        period=period,
        currency=currency,
        plan_id=terms.plan_id if terms is not None else None,
        plan_version=terms.version if terms is not None else None,
        lines=tuple(lines),
        total_minor=due - carried,
        carry_forward_minor=carried,
    )


# ---------------------------------------------------------------------------------- settlement periods
# A partner settles on its plan's cadence, in its own time zone: a weekly period is an ISO week from
# Monday 00:00 local, a monthly one a calendar month from the 1st 00:00 local, and a period of N minutes
# one of the day's N-minute slices counted from local midnight (the day's last slice ends at the next
# midnight, however short). Bounds are UTC instants; labels name periods in ids and URLs, so they hold
# no '/' and no ':' ("2026-12", "2026-W49", "2026-12-07T1430", the last the local start).


class CadenceKind(StrEnum):
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    MINUTES = "minutes"  # the demo's short periods


class Cadence(_Model):
    """How often a plan's partners settle (`commission_plans.cadence`, `cadence_minutes`)."""

    kind: CadenceKind
    minutes: int | None = Field(None, ge=1, le=1440, description="The period's length, for MINUTES only")

    @model_validator(mode="after")
    def _minutes_with_minutes_only(self) -> Cadence:
        if (self.kind == CadenceKind.MINUTES) != (self.minutes is not None):
            raise ValueError("a cadence in minutes says how many, and only it does")
        return self

    @property
    def name(self) -> str:
        """weekly, monthly, minutes-<N>."""
        return f"{self.kind}-{self.minutes}" if self.minutes is not None else str(self.kind)


class SettlementPeriod(Period):
    """A period on a cadence, with its label."""

    label: str = Field(min_length=1)


def _midnight(day: date, zone: tzinfo) -> datetime:
    return datetime.combine(day, time(), tzinfo=zone).astimezone(UTC)


def period_containing(at: datetime, cadence: Cadence, zone: tzinfo) -> SettlementPeriod:
    """The period of `cadence` in time zone `zone` that the instant `at` falls in."""
    _aware(at)
    day = at.astimezone(zone).date()
    if cadence.kind == CadenceKind.MONTHLY:
        first = day.replace(day=1)
        after = (first + timedelta(days=32)).replace(day=1)
        return SettlementPeriod(start=_midnight(first, zone), end=_midnight(after, zone), label=f"{first:%Y-%m}")
    if cadence.kind == CadenceKind.WEEKLY:
        monday = day - timedelta(days=day.weekday())
        year, week, _ = monday.isocalendar()
        return SettlementPeriod(
            start=_midnight(monday, zone), end=_midnight(monday + timedelta(days=7), zone), label=f"{year}-W{week:02d}"
        )
    length = timedelta(minutes=present(cadence.minutes, "a cadence's minutes"))
    midnight, next_midnight = _midnight(day, zone), _midnight(day + timedelta(days=1), zone)
    start = midnight + length * ((at - midnight) // length)
    return SettlementPeriod(
        start=start, end=min(start + length, next_midnight), label=f"{start.astimezone(zone):%Y-%m-%dT%H%M}"
    )


def previous_period(period: Period, cadence: Cadence, zone: tzinfo) -> SettlementPeriod:
    """The period of `cadence` just before `period`."""
    return period_containing(period.start - timedelta(microseconds=1), cadence, zone)


_LABELS = {
    CadenceKind.MONTHLY: re.compile(r"(?P<year>\d{4})-(?P<month>\d{2})"),
    CadenceKind.WEEKLY: re.compile(r"(?P<year>\d{4})-W(?P<week>\d{2})"),
    CadenceKind.MINUTES: re.compile(
        r"(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})T(?P<hour>\d{2})(?P<minute>\d{2})"
    ),
}


def period_of_label(label: str, cadence: Cadence, zone: tzinfo) -> SettlementPeriod:
    """The period of `cadence` in `zone` that `label` names; ValueError if it names none (a malformed
    label, another cadence's, or a time that does not start a period)."""
    match = _LABELS[cadence.kind].fullmatch(label)
    if match is None:
        raise ValueError(f"{label!r} is no {cadence.name} period")
    parts = {name: int(value) for name, value in match.groupdict().items()}
    try:
        if cadence.kind == CadenceKind.MONTHLY:
            start = _midnight(date(parts["year"], parts["month"], 1), zone)
        elif cadence.kind == CadenceKind.WEEKLY:
            start = _midnight(date.fromisocalendar(parts["year"], parts["week"], 1), zone)
        else:
            local = datetime(parts["year"], parts["month"], parts["day"], parts["hour"], parts["minute"], tzinfo=zone)
            start = local.astimezone(UTC)
    except ValueError as exc:
        raise ValueError(f"{label!r} is no {cadence.name} period: {exc}") from None
    period = period_containing(start, cadence, zone)
    if period.start != start or period.label != label:
        raise ValueError(f"{label!r} does not start a {cadence.name} period (that one is {period.label!r})")
    return period
