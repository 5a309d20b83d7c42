"""The ops API: alerts and their delivery log, work orders (open, list, accept, resolve, reassign,
cancel), incident figures (MTTA/MTTR, uptime, open items by age) and device traces. Every endpoint
takes an operator token, and shows and acts on the caller's cities only."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.api.auth import STAFF, Principal, require
from swapflow.api.deps import DatabaseDep, SessionDep, SettingsDep, TemporalDep, answer_created
from swapflow.api.ops_schemas import (
    AlertDeliveryView,
    AlertView,
    CancelBody,
    FiguresPeriod,
    IncidentFiguresView,
    IncidentReport,
    OpenByAge,
    ReassignBody,
    ResolveBody,
    UptimeReport,
    UptimeView,
    WorkOrderCreate,
    WorkOrderEventView,
    WorkOrderView,
)
from swapflow.api.problems import problem_responses
from swapflow.db.cities import battery_city
from swapflow.db.ops import WorkOrder
from swapflow.domain.clock import as_utc, utcnow
from swapflow.domain.errors import NotFound
from swapflow.domain.ops import OperatorRole
from swapflow.ops.figures import incident_figures, open_by_age
from swapflow.ops.uptime import Period, UptimeScope, uptime
from swapflow.services import alerts, batteries, traces, work_orders
from swapflow.services.traces import Trace
from swapflow.workflows.work_order import WorkOrderWorkflow
from swapflow.workflows.work_order_contract import Accept, Cancel, Reassign, Resolve, work_order_workflow_id

router = APIRouter(prefix="/v1/ops", tags=["ops"])

Staff = Annotated[Principal, Depends(require(*STAFF))]
StaffOrTechnician = Annotated[Principal, Depends(require(*STAFF, OperatorRole.TECHNICIAN))]
Technician = Annotated[Principal, Depends(require(OperatorRole.TECHNICIAN))]
CityQuery = Annotated[str | None, Query(max_length=16)]
FromQuery = Annotated[datetime | None, Query(alias="from", description="Start (default: 24 h before `to`).")]
ToQuery = Annotated[datetime | None, Query(alias="to", description="End (default: now).")]


def _period(start: datetime | None, end: datetime | None) -> Period:
    """The period asked for; one that ends before it starts (a `from` in the future) is empty: no figures."""
    end = as_utc(end) if end else utcnow()
    start = as_utc(start) if start else end - timedelta(hours=24)
    return Period(start, max(start, end))


# ---------------------------------------------------------------------------------- alerts


@router.get("/alerts", response_model=list[AlertView])
async def list_alerts(
    session: SessionDep,
    principal: StaffOrTechnician,
    city: CityQuery = None,
    status_: Annotated[str, Query(alias="status", pattern="^(open|resolved|all)$")] = "open",
    kind: Annotated[str | None, Query(max_length=40)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[AlertView]:
    """Alerts of the caller's cities, newest first (network-wide ones, such as ingest lag, for admins)."""
    found = await alerts.alerts(session, cities=principal.visible_cities(city), status=status_, kind=kind, limit=limit)
    now = utcnow()
    return [
        AlertView.model_validate(alert).model_copy(
            update={
                "city_code": city_code,
                "age_s": round(
                    (
                        (as_utc(alert.resolved_at) if alert.resolved_at else now) - as_utc(alert.created_at)
                    ).total_seconds(),
                    3,
                ),
            }
        )
        for alert, city_code in found
    ]


@router.get("/alerts/{alert_id}/deliveries", response_model=list[AlertDeliveryView])
async def alert_deliveries(
    alert_id: Annotated[int, Path(ge=1, le=2**63 - 1)], session: SessionDep, principal: Staff
) -> list[AlertDeliveryView]:
    """Every attempt to push the alert to a channel: the delivery log."""
    _, city = await alerts.find_alert(session, alert_id)
    if city is None and principal.cities is not None:
        raise NotFound("alert", alert_id)
    principal.check_city(city or "", "alert", str(alert_id))
    return [AlertDeliveryView.model_validate(row) for row in await alerts.deliveries(session, alert_id)]


# ---------------------------------------------------------------------------------- work orders


async def _work_order_view(session: AsyncSession, order: WorkOrder) -> WorkOrderView:
    return WorkOrderView.model_validate(order).model_copy(
        update={
            "workflow_id": work_order_workflow_id(order.id),
            "timeline": [WorkOrderEventView.model_validate(e) for e in await work_orders.timeline(session, order)],
        }
    )


async def _visible_order(session: AsyncSession, principal: Principal, work_order_id: str) -> WorkOrder:
    order = await work_orders.find_work_order(session, work_order_id)
    principal.check_city(order.city_code, "work order", work_order_id)
    return order


@router.get("/work-orders", response_model=list[WorkOrderView])
async def list_work_orders(
    session: SessionDep,
    principal: StaffOrTechnician,
    city: CityQuery = None,
    status_: Annotated[str, Query(alias="status", pattern="^(open|closed|cancelled|all)$")] = "open",
    assigned: Annotated[str | None, Query(description="`me`, or a technician id")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[WorkOrderView]:
    """Work orders of the caller's cities, newest first; `assigned=me` for a technician's own."""
    found = await work_orders.work_orders(
        session,
        cities=principal.visible_cities(city),
        status=status_,
        technician_id=principal.id if assigned == "me" else assigned,
        limit=limit,
    )
    return [await _work_order_view(session, order) for order in found]


@router.get("/work-orders/{work_order_id}", response_model=WorkOrderView)
async def get_work_order(work_order_id: str, session: SessionDep, principal: StaffOrTechnician) -> WorkOrderView:
    """One work order with its timeline."""
    return await _work_order_view(session, await _visible_order(session, principal, work_order_id))


@router.post(
    "/work-orders",
    response_model=WorkOrderView,
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"model": WorkOrderView, "description": "The cabinet (and slot) already has this open work order"},
        **problem_responses(404, 503),
    },
)
async def open_work_order(
    body: WorkOrderCreate,
    response: Response,
    db: DatabaseDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    principal: Staff,
) -> WorkOrderView:
    """Open a work order by hand. One open order per cabinet and slot: an existing one is returned."""
    async with db.sessions() as session:
        principal.check_city(await work_orders.cabinet_city_of(session, body.cabinet_id), "cabinet", body.cabinet_id)
    order, created = await work_orders.open_manual_work_order(
        db,
        settings,
        temporal,
        cabinet_id=body.cabinet_id,
        slot_no=body.slot_no,
        severity=body.severity,
        description=body.description or f"opened by {principal.id}",
    )
    answer_created(response, created)
    async with db.sessions() as session:
        return await _work_order_view(session, order)


UPDATE_PROBLEMS = problem_responses(409, 503)
"""What a work order's workflow update may answer besides its result: not possible now, or no workflow service."""


async def _update(
    db: DatabaseDep, temporal: TemporalDep, principal: Principal, work_order_id: str, update: Any, argument: Any
) -> WorkOrderView:
    async with db.sessions() as session:
        await _visible_order(session, principal, work_order_id)
    await work_orders.update_work_order(temporal, work_order_id, update, argument)
    async with db.sessions() as session:
        return await _work_order_view(session, await _visible_order(session, principal, work_order_id))


@router.post("/work-orders/{work_order_id}/accept", response_model=WorkOrderView, responses=UPDATE_PROBLEMS)
async def accept_work_order(
    work_order_id: str, db: DatabaseDep, temporal: TemporalDep, principal: Technician
) -> WorkOrderView:
    """The assigned technician accepts the order."""
    return await _update(db, temporal, principal, work_order_id, WorkOrderWorkflow.accept, Accept(actor=principal.id))


@router.post("/work-orders/{work_order_id}/resolve", response_model=WorkOrderView, responses=UPDATE_PROBLEMS)
async def resolve_work_order(
    work_order_id: str, body: ResolveBody, db: DatabaseDep, temporal: TemporalDep, principal: Technician
) -> WorkOrderView:
    """The assigned technician reports the fix; the workflow verifies it, then closes or reopens."""
    return await _update(
        db, temporal, principal, work_order_id, WorkOrderWorkflow.resolve, Resolve(actor=principal.id, note=body.note)
    )


@router.post("/work-orders/{work_order_id}/reassign", response_model=WorkOrderView, responses=UPDATE_PROBLEMS)
async def reassign_work_order(
    work_order_id: str, body: ReassignBody, db: DatabaseDep, temporal: TemporalDep, principal: Staff
) -> WorkOrderView:
    """Give the order to another technician of its city (named, or the nearest other one on duty)."""
    if body.technician_id is not None:
        async with db.sessions() as session:
            order = await _visible_order(session, principal, work_order_id)
            await work_orders.check_technician(session, order, body.technician_id)
    return await _update(
        db,
        temporal,
        principal,
        work_order_id,
        WorkOrderWorkflow.reassign,
        Reassign(actor=principal.id, technician_id=body.technician_id),
    )


@router.post("/work-orders/{work_order_id}/cancel", response_model=WorkOrderView, responses=UPDATE_PROBLEMS)
async def cancel_work_order(
    work_order_id: str, body: CancelBody, db: DatabaseDep, temporal: TemporalDep, principal: Staff
) -> WorkOrderView:
    """Cancel the order (nothing is verified; the slot stays as it is)."""
    return await _update(
        db, temporal, principal, work_order_id, WorkOrderWorkflow.cancel, Cancel(actor=principal.id, reason=body.reason)
    )


# ---------------------------------------------------------------------------------- figures


@router.get("/figures/incidents", response_model=IncidentReport)
async def incidents(
    session: SessionDep, principal: Staff, city: CityQuery = None, start: FromQuery = None, end: ToQuery = None
) -> IncidentReport:
    """MTTA and MTTR per city of the work orders opened in the period, from their recorded timelines."""
    period = _period(start, end)
    figures = await incident_figures(session, period, principal.visible_cities(city))
    return IncidentReport(
        period=FiguresPeriod(start=period.start, end=period.end),
        cities=[IncidentFiguresView(**vars(f)) for f in figures],
    )


@router.get("/figures/uptime", response_model=UptimeReport)
async def uptime_figures(
    session: SessionDep,
    principal: Staff,
    scope: Annotated[UptimeScope, Query()] = UptimeScope.CITY,
    city: CityQuery = None,
    key: Annotated[str | None, Query(description="One cabinet, station or city")] = None,
    start: FromQuery = None,
    end: ToQuery = None,
) -> UptimeReport:
    """Uptime per cabinet, station or city over the period, from the recorded online/offline transitions."""
    period = _period(start, end)
    items = await uptime(session, scope, period, cities=principal.visible_cities(city), key=key)
    return UptimeReport(
        period=FiguresPeriod(start=period.start, end=min(period.end, utcnow())),
        items=[
            UptimeView(
                scope=u.scope,
                key=u.key,
                city_code=u.city_code,
                observed_s=u.observed_s,
                online_s=u.online_s,
                transitions=u.transitions,
                uptime=None if u.ratio is None else round(u.ratio, 6),
            )
            for u in items
        ],
    )


@router.get("/figures/open", response_model=OpenByAge)
async def open_items(session: SessionDep, principal: Staff, city: CityQuery = None) -> OpenByAge:
    """Open alerts and work orders by age."""
    return OpenByAge(**await open_by_age(session, utcnow(), principal.visible_cities(city)))


# ---------------------------------------------------------------------------------- traces

TraceLimit = Annotated[int, Query(ge=1, le=5000)]


@router.get("/trace/cabinets/{cabinet_id}", response_model=Trace)
async def trace_cabinet(cabinet_id: str, session: SessionDep, principal: Staff, limit: TraceLimit = 500) -> Trace:
    """Everything that happened at a cabinet, in order: device messages, commands, online/offline
    transitions, custody changes in its slots, alerts and work-order steps (the newest `limit`)."""
    principal.check_city(await work_orders.cabinet_city_of(session, cabinet_id), "cabinet", cabinet_id)
    return await traces.trace_cabinet(session, cabinet_id, limit)


@router.get("/trace/batteries/{serial}", response_model=Trace)
async def trace_battery(serial: str, session: SessionDep, principal: Staff, limit: TraceLimit = 500) -> Trace:
    """Everything that happened to a pack, in order: device messages that name it, custody changes,
    safety checks, alerts and the work orders of the slots it was quarantined in."""
    battery = await batteries.find_battery(session, serial)
    city = await battery_city(session, battery)
    if city is None and principal.cities is not None:
        raise NotFound("battery", serial)
    principal.check_city(city or "", "battery", serial)
    return await traces.trace_battery(session, serial, limit)
