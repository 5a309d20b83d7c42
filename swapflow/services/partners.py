"""Partners and their commission plans, as admins set them up (the API and `swapflow partners|plans`):
partners (station hosts, city franchisees, channel agents in a tree), who hosts which station and holds
which city, versioned plans and who is on which from when, and which agent brought each rider. Each
change is checked against the rest (an agent's parent is an agent, no cycle in the tree, a host of the
host kind, a plan in the partner's currency) and audited in the transaction that makes it. What is
refused for how things stand is a `Conflict`; an unknown name is `NotFound`.

City scopes: `cities` None sees every partner; otherwise a partner is seen if it works in one of them."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.commissions import (
    CityFranchisee,
    CommissionPlan,
    CommissionPlanVersion,
    Partner,
    PartnerAttribution,
    PlanAssignment,
    StationHost,
)
from swapflow.db.network import City, Rider, Station
from swapflow.domain.clock import as_utc, utcnow
from swapflow.domain.commissions import PartnerKind, PlanVersion
from swapflow.domain.errors import Conflict, NotFound
from swapflow.ops.accounts import PARTNER, issue_token
from swapflow.payments.payouts import PayoutMethod
from swapflow.services.audit import record_change, snapshot

UPDATABLE = frozenset(
    {
        "name",
        "parent_id",
        "cities",
        "time_zone",
        "currency",
        "referral_code",
        "payout_method",
        "payout_account",
        "payout_details",
        "active",
    }
)
"""What an update may change; a partner's id and kind stay what they were created as."""

CADENCES = ("weekly", "monthly", "minutes")
TERMS = (
    "effective_from",
    "currency",
    "percent_bp",
    "fixed_minor",
    "tiers",
    "overrides_bp",
    "cap_minor",
    "minimum_payout_minor",
)
"""The fields of a plan version's terms (domain `PlanVersion` without its plan id and number)."""


def normalise_referral_code(code: str) -> str:
    """Referral codes are case-insensitive: riders type them at sign-up."""
    return code.strip().upper()


# ---------------------------------------------------------------------------------------- partners


def sees_partner(partner: Partner, cities: Collection[str] | None) -> bool:
    return cities is None or bool(set(partner.cities) & set(cities))


async def find_partner(session: AsyncSession, partner_id: str, cities: Collection[str] | None = None) -> Partner:
    """The partner, or NotFound (also for one outside `cities`)."""
    partner = await session.get(Partner, partner_id)
    if partner is None or not sees_partner(partner, cities):
        raise NotFound("partner", partner_id)
    return partner


async def list_partners(
    session: AsyncSession,
    cities: Collection[str] | None,
    *,
    kind: PartnerKind | None = None,
    city_code: str | None = None,
    parent_id: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[Partner]:
    """Partners by id, of `kind`, working in `city_code`, recruited by `parent_id`, within `cities`."""
    query = select(Partner).order_by(Partner.id)
    if kind is not None:
        query = query.where(Partner.kind == kind)
    if parent_id is not None:
        query = query.where(Partner.parent_id == parent_id)
    # A partner's cities are a JSON list: filtered here, not in SQL (partners are few).
    found = [
        partner
        for partner in await session.scalars(query)
        if sees_partner(partner, cities) and (city_code is None or city_code in partner.cities)
    ]
    return found[offset : offset + limit]


async def _cities(session: AsyncSession, codes: Sequence[str]) -> list[City]:
    found = {city.code: city for city in await session.scalars(select(City).where(City.code.in_(list(codes))))}
    for code in codes:
        if code not in found:
            raise NotFound("city", code)
    return [found[code] for code in codes]


async def _check_parent(session: AsyncSession, partner: Partner) -> None:
    """An agent's parent is an agent, and following parents up never comes back to the partner."""
    if partner.parent_id is None:
        return
    if partner.kind != PartnerKind.CHANNEL_AGENT:
        raise Conflict("Not an agent", f"only a channel agent has a parent; {partner.id} is a {partner.kind}")
    seen = {partner.id}
    ancestor_id: str | None = partner.parent_id
    while ancestor_id is not None:
        if ancestor_id in seen:
            raise Conflict("Cycle in the agent tree", f"{partner.parent_id} is {partner.id} or recruited by it")
        seen.add(ancestor_id)
        ancestor = await session.get(Partner, ancestor_id, with_for_update=True)
        if ancestor is None:
            raise NotFound("partner", ancestor_id)
        if ancestor.kind != PartnerKind.CHANNEL_AGENT:
            raise Conflict("Parent not an agent", f"the parent {ancestor.id} is a {ancestor.kind}, not a channel agent")
        ancestor_id = ancestor.parent_id


async def _linked_cities(session: AsyncSession, partner_id: str) -> dict[str, str]:
    """The cities a partner must work in, each with why: its stations', its franchises', its riders'."""
    hosted = await session.execute(
        select(Station.city_code, Station.id)
        .join(StationHost, StationHost.station_id == Station.id)
        .where(StationHost.partner_id == partner_id)
    )
    franchised = await session.scalars(select(CityFranchisee.city_code).where(CityFranchisee.partner_id == partner_id))
    riders = await session.execute(
        select(Rider.city_code, func.min(Rider.id))
        .join(PartnerAttribution, PartnerAttribution.rider_id == Rider.id)
        .where(PartnerAttribution.partner_id == partner_id)
        .group_by(Rider.city_code)
    )
    linked = {city: f"rider {rider} is attributed to it" for city, rider in riders.tuples()}
    linked |= {city: f"it holds the franchise of {city}" for city in franchised}
    linked |= {city: f"it hosts station {station}" for city, station in hosted.tuples()}
    return linked


async def _check_partner(session: AsyncSession, partner: Partner) -> None:
    """Everything a partner's fields must agree with, whether just created or changed."""
    if not partner.cities:
        raise Conflict("No city", "a partner works in at least one city")
    for city in await _cities(session, partner.cities):
        if city.currency != partner.currency:
            raise Conflict(
                "Currency mismatch", f"{city.code} pays in {city.currency}; the partner in {partner.currency}"
            )
    try:
        ZoneInfo(partner.time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise NotFound("time zone", partner.time_zone) from None
    await _check_parent(session, partner)
    if partner.referral_code is not None:
        if partner.kind != PartnerKind.CHANNEL_AGENT:
            raise Conflict("Not an agent", "only a channel agent has a referral code")
        holder = await session.scalar(
            select(Partner.id).where(Partner.referral_code == partner.referral_code, Partner.id != partner.id)
        )
        if holder is not None:
            raise Conflict("Referral code taken", f"referral code {partner.referral_code!r} is {holder}'s")
    if partner.payout_method in (PayoutMethod.WECHAT, PayoutMethod.STRIPE) and not partner.payout_account:
        raise Conflict("No payout account", f"a {partner.payout_method} payout needs the partner's account")
    for code, why in (await _linked_cities(session, partner.id)).items():
        if code not in partner.cities:
            raise Conflict("City still linked", f"{partner.id} must work in {code}: {why}")
    wrong = await session.scalar(
        select(CommissionPlanVersion.plan_id)
        .join(PlanAssignment, PlanAssignment.plan_id == CommissionPlanVersion.plan_id)
        .where(PlanAssignment.partner_id == partner.id, CommissionPlanVersion.currency != partner.currency)
        .limit(1)
    )
    if wrong is not None:
        raise Conflict("Currency mismatch", f"{partner.id} is on plan {wrong}, not in {partner.currency}")


async def create_partner(
    session: AsyncSession,
    *,
    actor: str,
    kind: PartnerKind,
    name: str,
    cities: Sequence[str],
    payout_method: PayoutMethod,
    partner_id: str | None = None,
    parent_id: str | None = None,
    time_zone: str | None = None,
    currency: str | None = None,
    referral_code: str | None = None,
    payout_account: str | None = None,
    payout_details: Mapping[str, str] | None = None,
    active: bool = True,
    reason: str = "",
) -> Partner:
    """A new partner; its time zone and currency are its first city's unless given."""
    partner_id = partner_id or f"ptn-{uuid.uuid4().hex[:12]}"
    if await session.get(Partner, partner_id) is not None:
        raise Conflict("Partner exists", f"there is a partner {partner_id} already")
    first = (await _cities(session, cities[:1]))[0] if cities else None
    partner = Partner(
        id=partner_id,
        kind=kind,
        name=name,
        parent_id=parent_id,
        cities=list(dict.fromkeys(cities)),
        time_zone=time_zone or (first.timezone if first else "UTC"),
        currency=currency or (first.currency if first else ""),
        referral_code=normalise_referral_code(referral_code) if referral_code else None,
        payout_method=payout_method,
        payout_account=payout_account,
        payout_details=dict(payout_details or {}),
        active=active,
        created_at=utcnow(),
    )
    await _check_partner(session, partner)
    session.add(partner)
    await _flush(session, partner_id)
    record_change(session, actor, "create", "partner", partner.id, None, snapshot(partner), reason)
    return partner


async def update_partner(
    session: AsyncSession, partner_id: str, changes: Mapping[str, Any], *, actor: str, reason: str = ""
) -> Partner:
    """Change some of a partner's fields (`UPDATABLE`); the partner must still hold together after."""
    unknown = set(changes) - UPDATABLE
    if unknown:
        raise Conflict("Not changeable", f"{', '.join(sorted(unknown))} cannot be changed")
    partner = await session.get(Partner, partner_id, with_for_update=True)
    if partner is None:
        raise NotFound("partner", partner_id)
    before = snapshot(partner)
    for field, value in changes.items():
        if field == "referral_code" and value:
            value = normalise_referral_code(value)
        elif field == "cities":
            value = list(dict.fromkeys(value))
        elif field == "payout_details":
            value = dict(value or {})
        setattr(partner, field, value)
    await _check_partner(session, partner)
    await _flush(session, partner_id)
    record_change(session, actor, "update", "partner", partner.id, before, snapshot(partner), reason)
    return partner


async def _flush(session: AsyncSession, partner_id: str) -> None:
    try:
        await session.flush()
    except IntegrityError:  # a concurrent create of the same id or referral code
        raise Conflict("Partner exists", f"partner {partner_id} or its referral code was taken meanwhile") from None


async def issue_partner_token(session: AsyncSession, partner_id: str, *, actor: str, label: str = "") -> str:
    """A new token for the partner's login (shown once; only its hash is kept)."""
    partner = await find_partner(session, partner_id)
    if not partner.active:
        raise Conflict("Partner not active", f"partner {partner_id} is not active")
    token = await issue_token(session, PARTNER, partner_id, label or f"issued by {actor}")
    record_change(session, actor, "issue_token", "partner", partner_id, None, {"label": label or f"issued by {actor}"})
    return token


# ---------------------------------------------------------------------------------- hosts, franchises


async def _earning_partner(session: AsyncSession, partner_id: str, kind: PartnerKind, city_code: str) -> Partner:
    partner = await find_partner(session, partner_id)
    if partner.kind != kind:
        raise Conflict("Wrong kind of partner", f"{partner_id} is a {partner.kind}, not a {kind}")
    if not partner.active:
        raise Conflict("Partner not active", f"partner {partner_id} is not active")
    if city_code not in partner.cities:
        raise Conflict("Not in the city", f"{partner_id} does not work in {city_code}")
    return partner


async def set_station_host(
    session: AsyncSession, station_id: str, partner_id: str, *, actor: str, reason: str = ""
) -> tuple[StationHost, str]:
    """The station's host from now on: a station host working in the station's city. Returns the host
    row and the station's city."""
    station = await session.get(Station, station_id)
    if station is None:
        raise NotFound("station", station_id)
    await _earning_partner(session, partner_id, PartnerKind.STATION_HOST, station.city_code)
    row = await session.get(StationHost, station_id, with_for_update=True)
    before = snapshot(row)
    if row is None:
        row = StationHost(station_id=station_id, partner_id=partner_id)
        session.add(row)
    row.partner_id = partner_id
    await session.flush()
    record_change(session, actor, "set_host", "station_host", station_id, before, snapshot(row), reason)
    return row, station.city_code


async def set_city_franchisee(
    session: AsyncSession, city_code: str, partner_id: str, *, actor: str, reason: str = ""
) -> CityFranchisee:
    """The city's franchisee from now on: a city franchisee working in the city."""
    await _cities(session, [city_code])
    await _earning_partner(session, partner_id, PartnerKind.CITY_FRANCHISEE, city_code)
    row = await session.get(CityFranchisee, city_code, with_for_update=True)
    before = snapshot(row)
    if row is None:
        row = CityFranchisee(city_code=city_code, partner_id=partner_id)
        session.add(row)
    row.partner_id = partner_id
    await session.flush()
    record_change(session, actor, "set_franchisee", "city_franchisee", city_code, before, snapshot(row), reason)
    return row


async def station_hosts(session: AsyncSession, cities: Collection[str] | None) -> list[tuple[StationHost, str]]:
    """Every station's host with the station's city, by station, within `cities`."""
    query = select(StationHost, Station.city_code).join(Station, Station.id == StationHost.station_id)
    if cities is not None:
        query = query.where(Station.city_code.in_(list(cities)))
    return list((await session.execute(query.order_by(StationHost.station_id))).tuples())


async def city_franchisees(session: AsyncSession, cities: Collection[str] | None) -> list[CityFranchisee]:
    query = select(CityFranchisee).order_by(CityFranchisee.city_code)
    if cities is not None:
        query = query.where(CityFranchisee.city_code.in_(list(cities)))
    return list(await session.scalars(query))


# -------------------------------------------------------------------------------------- attribution


def _check_agent_for(rider: Rider, partner: Partner) -> None:
    if partner.kind != PartnerKind.CHANNEL_AGENT:
        raise Conflict("Wrong kind of partner", f"{partner.id} is a {partner.kind}, not a channel agent")
    if not partner.active:
        raise Conflict("Partner not active", f"partner {partner.id} is not active")
    if rider.city_code not in partner.cities:
        raise Conflict("Not in the city", f"rider {rider.id} is in {rider.city_code}; {partner.id} is not")


async def _rider(session: AsyncSession, rider_id: str) -> Rider:
    rider = await session.get(Rider, rider_id)
    if rider is None:
        raise NotFound("rider", rider_id)
    return rider


async def attribute_rider(
    session: AsyncSession, rider_id: str, partner_id: str, *, actor: str, reason: str = ""
) -> PartnerAttribution:
    """An admin attributes the rider to a channel agent (replacing any earlier attribution)."""
    rider = await _rider(session, rider_id)
    _check_agent_for(rider, await find_partner(session, partner_id))
    row = await session.get(PartnerAttribution, rider_id, with_for_update=True)
    before = snapshot(row)
    if row is None:
        row = PartnerAttribution(rider_id=rider_id)
        session.add(row)
    row.partner_id, row.source, row.by, row.at = partner_id, "admin", actor, utcnow()
    await session.flush()
    record_change(session, actor, "attribute", "attribution", rider_id, before, snapshot(row), reason)
    return row


async def attribute_by_referral(session: AsyncSession, rider_id: str, referral_code: str) -> PartnerAttribution:
    """At sign-up: the rider is attributed to the agent whose referral code they gave. A rider already
    attributed stays with that agent (the referral changes nothing). NotFound for an unknown code."""
    rider = await _rider(session, rider_id)
    code = normalise_referral_code(referral_code)
    partner = await session.scalar(select(Partner).where(Partner.referral_code == code))
    if partner is None:
        raise NotFound("referral code", code)
    existing = await session.get(PartnerAttribution, rider_id)
    if existing is not None:
        return existing
    _check_agent_for(rider, partner)
    row = PartnerAttribution(rider_id=rider_id, partner_id=partner.id, source="referral", by=None, at=utcnow())
    session.add(row)
    await session.flush()
    record_change(session, rider_id, "attribute", "attribution", rider_id, None, snapshot(row), f"referral {code}")
    return row


async def attribution_of(
    session: AsyncSession, rider_id: str, cities: Collection[str] | None = None
) -> PartnerAttribution:
    """The rider's attribution, or NotFound (also for a rider outside `cities`)."""
    rider = await _rider(session, rider_id)
    row = await session.get(PartnerAttribution, rider_id)
    if row is None or (cities is not None and rider.city_code not in cities):
        raise NotFound("attribution", rider_id)
    return row


async def attributions_to(session: AsyncSession, partner_id: str) -> list[PartnerAttribution]:
    """The riders attributed to an agent, by rider."""
    rows = await session.scalars(
        select(PartnerAttribution)
        .where(PartnerAttribution.partner_id == partner_id)
        .order_by(PartnerAttribution.rider_id)
    )
    return list(rows)


# ----------------------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class PlanWithVersions:
    plan: CommissionPlan
    versions: list[CommissionPlanVersion]


def _terms(plan_id: str, version: int, terms: Mapping[str, Any]) -> PlanVersion:
    """The terms as the domain checks them (ascending tiers, rates within 100 %, …)."""
    try:
        return PlanVersion.model_validate(
            {**{k: terms[k] for k in TERMS if k in terms}, "plan_id": plan_id, "version": version}
        )
    except ValidationError as invalid:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'terms'}: {e['msg']}" for e in invalid.errors())
        raise Conflict("Plan terms refused", problems) from None


def _version_row(terms: PlanVersion, actor: str) -> CommissionPlanVersion:
    return CommissionPlanVersion(
        plan_id=terms.plan_id,
        version=terms.version,
        effective_from=terms.effective_from,
        currency=terms.currency,
        percent_bp=terms.percent_bp,
        fixed_minor=terms.fixed_minor,
        tiers=[tier.model_dump() for tier in terms.tiers],
        overrides_bp=list(terms.overrides_bp),
        cap_minor=terms.cap_minor,
        minimum_payout_minor=terms.minimum_payout_minor,
        created_by=actor,
        created_at=utcnow(),
    )


def _version_id(plan_id: str, version: int) -> str:
    return f"{plan_id}:{version}"


async def create_plan(
    session: AsyncSession,
    *,
    actor: str,
    name: str,
    terms: Mapping[str, Any],
    plan_id: str | None = None,
    cadence: str = "monthly",
    cadence_minutes: int | None = None,
    reason: str = "",
) -> PlanWithVersions:
    """A new plan with its first version's terms."""
    plan_id = plan_id or f"plan-{uuid.uuid4().hex[:12]}"
    if cadence not in CADENCES:
        raise Conflict("Unknown cadence", f"cadence is one of {', '.join(CADENCES)}")
    if (cadence == "minutes") != (cadence_minutes is not None):
        raise Conflict("Cadence minutes", "cadence_minutes goes with the minutes cadence, and only with it")
    if await session.get(CommissionPlan, plan_id) is not None:
        raise Conflict("Plan exists", f"there is a plan {plan_id} already")
    first = _version_row(_terms(plan_id, 1, terms), actor)
    plan = CommissionPlan(
        id=plan_id, name=name, cadence=cadence, cadence_minutes=cadence_minutes, created_by=actor, created_at=utcnow()
    )
    session.add(plan)
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict("Plan exists", f"plan {plan_id} was created meanwhile") from None
    session.add(first)
    await session.flush()
    record_change(session, actor, "create", "commission_plan", plan_id, None, snapshot(plan), reason)
    record_change(
        session, actor, "create", "commission_plan_version", _version_id(plan_id, 1), None, snapshot(first), reason
    )
    return PlanWithVersions(plan, [first])


async def find_plan(session: AsyncSession, plan_id: str) -> PlanWithVersions:
    """The plan and its versions (by number), or NotFound."""
    plan = await session.get(CommissionPlan, plan_id)
    if plan is None:
        raise NotFound("commission plan", plan_id)
    versions = await session.scalars(
        select(CommissionPlanVersion)
        .where(CommissionPlanVersion.plan_id == plan_id)
        .order_by(CommissionPlanVersion.version)
    )
    return PlanWithVersions(plan, list(versions))


async def list_plans(session: AsyncSession) -> list[PlanWithVersions]:
    plans = list(await session.scalars(select(CommissionPlan).order_by(CommissionPlan.id)))
    versions: dict[str, list[CommissionPlanVersion]] = {}
    for row in await session.scalars(
        select(CommissionPlanVersion).order_by(CommissionPlanVersion.plan_id, CommissionPlanVersion.version)
    ):
        versions.setdefault(row.plan_id, []).append(row)
    return [PlanWithVersions(plan, versions.get(plan.id, [])) for plan in plans]


async def _locked_plan(session: AsyncSession, plan_id: str) -> PlanWithVersions:
    # Locked: two versions added at once never take the same number.
    if await session.get(CommissionPlan, plan_id, with_for_update=True) is None:
        raise NotFound("commission plan", plan_id)
    return await find_plan(session, plan_id)


def _same_currency(plan: PlanWithVersions, terms: PlanVersion) -> None:
    currency = plan.versions[0].currency if plan.versions else terms.currency
    if terms.currency != currency:
        raise Conflict("Currency mismatch", f"plan {plan.plan.id} pays in {currency}, not {terms.currency}")


async def add_plan_version(
    session: AsyncSession, plan_id: str, terms: Mapping[str, Any], *, actor: str, reason: str = ""
) -> CommissionPlanVersion:
    """The plan's next version: new terms from their `effective_from` (a correction of a version in force
    is a new version, effective from the same time or later; on a tie the higher version applies)."""
    plan = await _locked_plan(session, plan_id)
    number = max((v.version for v in plan.versions), default=0) + 1
    checked = _terms(plan_id, number, terms)
    _same_currency(plan, checked)
    row = _version_row(checked, actor)
    session.add(row)
    await session.flush()
    record_change(
        session, actor, "create", "commission_plan_version", _version_id(plan_id, number), None, snapshot(row), reason
    )
    return row


async def correct_plan_version(
    session: AsyncSession, plan_id: str, version: int, terms: Mapping[str, Any], *, actor: str, reason: str = ""
) -> CommissionPlanVersion:
    """Replace the terms of a version not yet in force (and not brought into force by the change). A
    version once in force is immutable: Conflict, add a new version instead."""
    plan = await _locked_plan(session, plan_id)
    row = next((v for v in plan.versions if v.version == version), None)
    if row is None:
        raise NotFound("plan version", _version_id(plan_id, version))
    checked = _terms(plan_id, version, terms)
    now = utcnow()
    if as_utc(row.effective_from) <= now or checked.effective_from <= now:
        raise Conflict("Version in force", f"{plan_id} v{version} is or would be in force: add a new version")
    _same_currency(PlanWithVersions(plan.plan, [v for v in plan.versions if v is not row]), checked)
    before = snapshot(row)
    fresh = _version_row(checked, actor)
    for field in (*TERMS, "created_by", "created_at"):
        setattr(row, field, getattr(fresh, field))
    await session.flush()
    record_change(
        session,
        actor,
        "update",
        "commission_plan_version",
        _version_id(plan_id, version),
        before,
        snapshot(row),
        reason,
    )
    return row


# ----------------------------------------------------------------------------------- assignments


async def assign_plan(
    session: AsyncSession, partner_id: str, plan_id: str, effective_from: datetime, *, actor: str, reason: str = ""
) -> PlanAssignment:
    """Put the partner on the plan from `effective_from` (the latest assignment at or before a swap applies)."""
    partner = await find_partner(session, partner_id)
    plan = await find_plan(session, plan_id)
    currencies = {v.currency for v in plan.versions}
    if currencies != {partner.currency}:
        raise Conflict(
            "Currency mismatch",
            f"plan {plan_id} pays in {', '.join(sorted(currencies))}, partner {partner_id} in {partner.currency}",
        )
    taken = await session.scalar(
        select(PlanAssignment.id).where(
            PlanAssignment.partner_id == partner_id, PlanAssignment.effective_from == effective_from
        )
    )
    if taken is not None:
        raise Conflict("Assignment exists", f"{partner_id} already has an assignment from {effective_from.isoformat()}")
    row = PlanAssignment(
        partner_id=partner_id, plan_id=plan_id, effective_from=effective_from, assigned_by=actor, at=utcnow()
    )
    session.add(row)
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict("Assignment exists", f"{partner_id} was assigned from that time meanwhile") from None
    record_change(session, actor, "create", "plan_assignment", str(row.id), None, snapshot(row), reason)
    return row


async def assignments_of(session: AsyncSession, partner_id: str) -> list[PlanAssignment]:
    """The partner's plan assignments, by when they take effect."""
    rows = await session.scalars(
        select(PlanAssignment)
        .where(PlanAssignment.partner_id == partner_id)
        .order_by(PlanAssignment.effective_from, PlanAssignment.id)
    )
    return list(rows)
