"""Partners and their commission plans: admins create and change them (each change audited), finance
reads them (a city-scoped account only its cities' partners), a partner reads its own record. What does
not hold together (a parent that is no agent, a cycle in the agent tree, a host of another kind, a plan
in another currency, terms the domain refuses) answers 409."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, status

from swapflow.api.auth import Admin, Principal, require
from swapflow.api.deps import DatabaseDep, SessionDep
from swapflow.api.partner_schemas import (
    AssignmentCreate,
    AssignmentView,
    AttributionView,
    AuditEventView,
    CityFranchiseeView,
    PartnerCreate,
    PartnerLink,
    PartnerToken,
    PartnerUpdate,
    PartnerView,
    PlanCreate,
    PlanVersionCreate,
    PlanVersionView,
    PlanView,
    StationHostView,
)
from swapflow.api.problems import problem_responses
from swapflow.db.commissions import Partner
from swapflow.domain.commissions import PartnerKind
from swapflow.domain.errors import NotFound
from swapflow.domain.ops import OperatorRole
from swapflow.services import partners
from swapflow.services.audit import audit_trail, entity_cities

router = APIRouter(tags=["partners"])

Reader = Annotated[Principal, Depends(require(OperatorRole.FINANCE))]
ReaderOrPartner = Annotated[Principal, Depends(require(OperatorRole.FINANCE, partners=True))]
Id = Annotated[str, Path(min_length=1, max_length=40)]
CHANGE_PROBLEMS = problem_responses(409)


def _plan_view(found: partners.PlanWithVersions) -> PlanView:
    return PlanView.model_validate(
        {
            **{field: getattr(found.plan, field) for field in PlanView.model_fields if field != "versions"},
            "versions": [PlanVersionView.model_validate(version) for version in found.versions],
        }
    )


async def _visible_partner(session: SessionDep, principal: Principal, partner_id: str) -> Partner:
    """The partner, if the caller may see it: a partner itself only, an operator its cities' partners."""
    if principal.is_partner and principal.id != partner_id:
        raise NotFound("partner", partner_id)
    return await partners.find_partner(session, partner_id, None if principal.is_partner else principal.cities)


# ---------------------------------------------------------------------------------------- partners


@router.get("/v1/partners", response_model=list[PartnerView])
async def list_partners(
    session: SessionDep,
    principal: Reader,
    kind: PartnerKind | None = None,
    city_code: Annotated[str | None, Query(max_length=16)] = None,
    parent_id: Annotated[str | None, Query(max_length=40)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> list[PartnerView]:
    """Partners by id: of a kind, in a city, recruited by an agent; within the caller's cities."""
    rows = await partners.list_partners(
        session,
        principal.visible_cities(city_code),
        kind=kind,
        city_code=city_code,
        parent_id=parent_id,
        limit=limit,
        offset=offset,
    )
    return [PartnerView.model_validate(row) for row in rows]


@router.post(
    "/v1/partners",
    response_model=PartnerView,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(404, 409),
)
async def create_partner(body: PartnerCreate, db: DatabaseDep, principal: Admin) -> PartnerView:
    """A new partner (admins); its time zone and currency default to its first city's."""
    async with db.transaction() as session:
        partner = await partners.create_partner(
            session,
            actor=principal.id,
            partner_id=body.id,
            **body.model_dump(exclude={"id", "reason"}),
            reason=body.reason,
        )
        return PartnerView.model_validate(partner)


@router.get("/v1/partners/{partner_id}", response_model=PartnerView)
async def get_partner(partner_id: Id, session: SessionDep, principal: ReaderOrPartner) -> PartnerView:
    """A partner (finance, or the partner itself)."""
    return PartnerView.model_validate(await _visible_partner(session, principal, partner_id))


@router.patch("/v1/partners/{partner_id}", response_model=PartnerView, responses=CHANGE_PROBLEMS)
async def update_partner(partner_id: Id, body: PartnerUpdate, db: DatabaseDep, principal: Admin) -> PartnerView:
    """Change a partner's fields (admins); its id and kind stay."""
    async with db.transaction() as session:
        partner = await partners.update_partner(
            session, partner_id, body.changes(), actor=principal.id, reason=body.reason
        )
        return PartnerView.model_validate(partner)


@router.post(
    "/v1/partners/{partner_id}/tokens",
    response_model=PartnerToken,
    status_code=status.HTTP_201_CREATED,
    responses=CHANGE_PROBLEMS,
)
async def issue_partner_token(partner_id: Id, db: DatabaseDep, principal: Admin) -> PartnerToken:
    """A new login token for the partner (admins): shown in this answer only."""
    async with db.transaction() as session:
        token = await partners.issue_partner_token(session, partner_id, actor=principal.id)
    return PartnerToken(partner_id=partner_id, token=token)


@router.get("/v1/partners/{partner_id}/assignments", response_model=list[AssignmentView])
async def list_assignments(partner_id: Id, session: SessionDep, principal: ReaderOrPartner) -> list[AssignmentView]:
    """The partner's plan assignments, by when they take effect."""
    await _visible_partner(session, principal, partner_id)
    return [AssignmentView.model_validate(row) for row in await partners.assignments_of(session, partner_id)]


@router.post(
    "/v1/partners/{partner_id}/assignments",
    response_model=AssignmentView,
    status_code=status.HTTP_201_CREATED,
    responses=CHANGE_PROBLEMS,
)
async def assign_plan(partner_id: Id, body: AssignmentCreate, db: DatabaseDep, principal: Admin) -> AssignmentView:
    """Put the partner on a plan from a time (admins); the plan pays in the partner's currency."""
    async with db.transaction() as session:
        row = await partners.assign_plan(
            session, partner_id, body.plan_id, body.effective_from, actor=principal.id, reason=body.reason
        )
        return AssignmentView.model_validate(row)


@router.get("/v1/partners/{partner_id}/riders", response_model=list[AttributionView])
async def list_attributed_riders(partner_id: Id, session: SessionDep, principal: Reader) -> list[AttributionView]:
    """The riders attributed to an agent."""
    await _visible_partner(session, principal, partner_id)
    return [AttributionView.model_validate(row) for row in await partners.attributions_to(session, partner_id)]


# ------------------------------------------------------------------------- hosts, franchises, riders


@router.get("/v1/station-hosts", response_model=list[StationHostView])
async def list_station_hosts(session: SessionDep, principal: Reader) -> list[StationHostView]:
    """Every hosted station's host, within the caller's cities."""
    rows = await partners.station_hosts(session, principal.cities)
    return [StationHostView(station_id=row.station_id, partner_id=row.partner_id, city_code=city) for row, city in rows]


@router.put("/v1/station-hosts/{station_id}", response_model=StationHostView, responses=CHANGE_PROBLEMS)
async def set_station_host(station_id: Id, body: PartnerLink, db: DatabaseDep, principal: Admin) -> StationHostView:
    """The station's host from now on (admins): a station host working in the station's city."""
    async with db.transaction() as session:
        row, city = await partners.set_station_host(
            session, station_id, body.partner_id, actor=principal.id, reason=body.reason
        )
        return StationHostView(station_id=row.station_id, partner_id=row.partner_id, city_code=city)


@router.get("/v1/city-franchisees", response_model=list[CityFranchiseeView])
async def list_city_franchisees(session: SessionDep, principal: Reader) -> list[CityFranchiseeView]:
    """Every franchised city's franchisee, within the caller's cities."""
    rows = await partners.city_franchisees(session, principal.cities)
    return [CityFranchiseeView.model_validate(row) for row in rows]


@router.put("/v1/city-franchisees/{city_code}", response_model=CityFranchiseeView, responses=CHANGE_PROBLEMS)
async def set_city_franchisee(
    city_code: Annotated[str, Path(min_length=1, max_length=16)], body: PartnerLink, db: DatabaseDep, principal: Admin
) -> CityFranchiseeView:
    """The city's franchisee from now on (admins): a city franchisee working in the city."""
    async with db.transaction() as session:
        row = await partners.set_city_franchisee(
            session, city_code, body.partner_id, actor=principal.id, reason=body.reason
        )
        return CityFranchiseeView.model_validate(row)


@router.get("/v1/riders/{rider_id}/attribution", response_model=AttributionView)
async def get_attribution(rider_id: Id, session: SessionDep, principal: Reader) -> AttributionView:
    """The channel agent the rider is attributed to (404: none)."""
    return AttributionView.model_validate(await partners.attribution_of(session, rider_id, principal.cities))


@router.put("/v1/riders/{rider_id}/attribution", response_model=AttributionView, responses=CHANGE_PROBLEMS)
async def attribute_rider(rider_id: Id, body: PartnerLink, db: DatabaseDep, principal: Admin) -> AttributionView:
    """Attribute the rider to a channel agent of the rider's city (admins), replacing any earlier one."""
    async with db.transaction() as session:
        row = await partners.attribute_rider(session, rider_id, body.partner_id, actor=principal.id, reason=body.reason)
        return AttributionView.model_validate(row)


# ------------------------------------------------------------------------------------------ plans


@router.get("/v1/commission-plans", response_model=list[PlanView])
async def list_plans(session: SessionDep, _: Reader) -> list[PlanView]:
    """Every commission plan with its versions."""
    return [_plan_view(found) for found in await partners.list_plans(session)]


@router.post(
    "/v1/commission-plans", response_model=PlanView, status_code=status.HTTP_201_CREATED, responses=CHANGE_PROBLEMS
)
async def create_plan(body: PlanCreate, db: DatabaseDep, principal: Admin) -> PlanView:
    """A new plan with its first version (admins)."""
    async with db.transaction() as session:
        found = await partners.create_plan(
            session,
            actor=principal.id,
            plan_id=body.id,
            name=body.name,
            cadence=body.cadence,
            cadence_minutes=body.cadence_minutes,
            terms=body.terms.terms(),
            reason=body.reason,
        )
        return _plan_view(found)


@router.get("/v1/commission-plans/{plan_id}", response_model=PlanView)
async def get_plan(plan_id: Id, session: SessionDep, _: Reader) -> PlanView:
    return _plan_view(await partners.find_plan(session, plan_id))


@router.post(
    "/v1/commission-plans/{plan_id}/versions",
    response_model=PlanVersionView,
    status_code=status.HTTP_201_CREATED,
    responses=CHANGE_PROBLEMS,
)
async def add_plan_version(plan_id: Id, body: PlanVersionCreate, db: DatabaseDep, principal: Admin) -> PlanVersionView:
    """The plan's next version (admins): a version in force never changes, a correction is a new version."""
    async with db.transaction() as session:
        row = await partners.add_plan_version(session, plan_id, body.terms(), actor=principal.id, reason=body.reason)
        return PlanVersionView.model_validate(row)


@router.put(
    "/v1/commission-plans/{plan_id}/versions/{version}", response_model=PlanVersionView, responses=CHANGE_PROBLEMS
)
async def correct_plan_version(
    plan_id: Id,
    version: Annotated[int, Path(ge=1, le=100_000)],
    body: PlanVersionCreate,
    db: DatabaseDep,
    principal: Admin,
) -> PlanVersionView:
    """Replace the terms of a version not yet in force (admins); one in force answers 409."""
    async with db.transaction() as session:
        row = await partners.correct_plan_version(
            session, plan_id, version, body.terms(), actor=principal.id, reason=body.reason
        )
        return PlanVersionView.model_validate(row)


# -------------------------------------------------------------------------------------- the trail


@router.get("/v1/audit/{entity}/{entity_id}", response_model=list[AuditEventView])
async def get_audit_trail(
    entity: Annotated[str, Path(pattern="^[a-z_]{1,40}$", description="partner, commission_plan, refund, …")],
    entity_id: Annotated[str, Path(min_length=1, max_length=120)],
    session: SessionDep,
    principal: Reader,
) -> list[AuditEventView]:
    """Every change to one record, oldest first: who, when, what it was before and after, and why."""
    if principal.cities is not None:
        cities = await entity_cities(session, entity, entity_id)
        if cities is not None and not any(principal.sees_city(city) for city in cities):
            raise NotFound(entity.replace("_", " "), entity_id)
    return [AuditEventView.model_validate(row) for row in await audit_trail(session, entity, entity_id)]
