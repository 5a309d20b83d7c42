"""The ops API: alerts and their delivery log, work orders (open, list, accept, resolve, reassign,
cancel), incident figures (MTTA/MTTR, uptime, open items by age) and device traces. Every endpoint
takes an operator token, and shows and acts on the caller's cities only."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response, status
from sqlalchemy import String, cast, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError

from swapflow.activities.work_order import new_work_order, open_work_order_for, work_order_input
from swapflow.api.auth import STAFF, Principal, require
from swapflow.api.deps import DatabaseDep, SessionDep, SettingsDep, TemporalDep
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
    Trace,
    TraceEntry,
    UptimeReport,
    UptimeView,
    WorkOrderCreate,
    WorkOrderEventView,
    WorkOrderView,
)
from swapflow.api.problems import Problem, problem_responses
from swapflow.db.cities import battery_city, cabinet_city
from swapflow.db.devices import DeviceCommand, DeviceMessage
from swapflow.db.network import Battery, Cabinet, CabinetPresence, Station
from swapflow.db.ops import Alert, AlertDelivery, WorkOrder, WorkOrderEvent
from swapflow.db.ops import Technician as TechnicianRow
from swapflow.db.swaps import CustodyEvent, SafetyEvent
from swapflow.domain.clock import as_utc, utcnow
from swapflow.domain.ops import OPEN_WORK_ORDER_STATUSES, AlertStatus, OperatorRole
from swapflow.ops.figures import incident_figures, open_by_age
from swapflow.ops.uptime import Period, UptimeScope, uptime
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
    cities = principal.visible_cities(city)
    query = (
        select(Alert, Station.city_code)
        .outerjoin(Cabinet, Cabinet.id == Alert.cabinet_id)
        .outerjoin(Station, Station.id == Cabinet.station_id)
        .order_by(Alert.id.desc())
        .limit(limit)
    )
    if cities is not None:
        query = query.where(Station.city_code.in_(cities))
    if status_ != "all":
        query = query.where(Alert.status == AlertStatus(status_))
    if kind:
        query = query.where(Alert.kind == kind)
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
        for alert, city_code in (await session.execute(query)).tuples()
    ]


@router.get("/alerts/{alert_id}/deliveries", response_model=list[AlertDeliveryView])
async def alert_deliveries(
    alert_id: Annotated[int, Path(ge=1, le=2**63 - 1)], session: SessionDep, principal: Staff
) -> list[AlertDeliveryView]:
    """Every attempt to push the alert to a channel: the delivery log."""
    alert = await session.get(Alert, alert_id)
    if alert is None:
        raise Problem(404, "Unknown alert", f"no alert {alert_id}")
    city = await cabinet_city(session, alert.cabinet_id)
    if city is None and principal.cities is not None:
        raise Problem(404, "Unknown alert", f"no alert {alert_id}")
    principal.check_city(city or "", "alert", str(alert_id))
    rows = await session.scalars(
        select(AlertDelivery).where(AlertDelivery.alert_id == alert_id).order_by(AlertDelivery.id)
    )
    return [AlertDeliveryView.model_validate(row) for row in rows]


# ---------------------------------------------------------------------------------- work orders


async def _work_order_view(session: AsyncSession, order: WorkOrder) -> WorkOrderView:
    events = await session.scalars(
        select(WorkOrderEvent).where(WorkOrderEvent.work_order_id == order.id).order_by(WorkOrderEvent.seq)
    )
    return WorkOrderView.model_validate(order).model_copy(
        update={
            "workflow_id": work_order_workflow_id(order.id),
            "timeline": [WorkOrderEventView.model_validate(e) for e in events],
        }
    )


async def _visible_order(session: AsyncSession, principal: Principal, work_order_id: str) -> WorkOrder:
    order = await session.get(WorkOrder, work_order_id)
    if order is None:
        raise Problem(404, "Unknown work order", f"no work order {work_order_id!r}")
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
    cities = principal.visible_cities(city)
    query = select(WorkOrder).order_by(WorkOrder.opened_at.desc()).limit(limit)
    if cities is not None:
        query = query.where(WorkOrder.city_code.in_(cities))
    if status_ == "open":
        query = query.where(WorkOrder.status.in_(OPEN_WORK_ORDER_STATUSES))
    elif status_ != "all":
        query = query.where(WorkOrder.status == status_)
    if assigned:
        query = query.where(WorkOrder.technician_id == (principal.id if assigned == "me" else assigned))
    return [await _work_order_view(session, order) for order in await session.scalars(query)]


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
    async with db.transaction() as session:
        cabinet = await session.get(Cabinet, body.cabinet_id)
        city = await cabinet_city(session, body.cabinet_id)
        if cabinet is None or city is None:
            raise Problem(404, "Unknown cabinet", f"no cabinet {body.cabinet_id!r}")
        principal.check_city(city, "cabinet", body.cabinet_id)
        if body.slot_no is not None and body.slot_no > cabinet.slot_count:
            raise Problem(422, "Invalid request", f"cabinet {cabinet.id} has no slot {body.slot_no}")
        order = await open_work_order_for(session, body.cabinet_id, body.slot_no)
        created = order is None
        if order is None:
            order = await new_work_order(
                session,
                cabinet_id=body.cabinet_id,
                slot_no=body.slot_no,
                kind="manual",
                severity=body.severity,
                source="operator",
                description=body.description or f"opened by {principal.id}",
            )
        request = work_order_input(settings, order, cabinet.capability)
    if created:
        try:
            client = await temporal()
            await client.start_workflow(
                WorkOrderWorkflow.run,
                request,
                id=work_order_workflow_id(request.work_order_id),
                task_queue=settings.temporal_task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            )
        except (RuntimeError, RPCError) as exc:
            # The row stays `new`: the alert evaluator starts its workflow on its next round.
            raise Problem(503, "Work orders unavailable", f"workflow service unreachable: {exc}") from exc
    else:
        response.status_code = status.HTTP_200_OK
    async with db.sessions() as session:
        fresh = await session.get(WorkOrder, request.work_order_id)
        assert fresh is not None
        return await _work_order_view(session, fresh)


UPDATE_PROBLEMS = problem_responses(409, 503)
"""What a work order's workflow update may answer besides its result: not possible now, or no workflow service."""


async def _update(
    db: DatabaseDep, temporal: TemporalDep, principal: Principal, work_order_id: str, update: Any, argument: Any
) -> WorkOrderView:
    async with db.sessions() as session:
        await _visible_order(session, principal, work_order_id)
    try:
        client = await temporal()
        await client.get_workflow_handle(work_order_workflow_id(work_order_id)).execute_update(update, argument)
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        raise Problem(409, "Not possible now", str(getattr(cause, "message", cause) or exc)) from exc
    except RPCError as exc:
        raise Problem(409, "Not possible now", f"the work order's workflow is not running: {exc}") from exc
    except RuntimeError as exc:
        raise Problem(503, "Work orders unavailable", f"workflow service unreachable: {exc}") from exc
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
            technician = await session.get(TechnicianRow, body.technician_id)
            if technician is None or technician.city_code != order.city_code:
                raise Problem(422, "Invalid request", f"{body.technician_id!r} is no technician of {order.city_code}")
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


def _ordered(subject: str, entries: list[TraceEntry], limit: int) -> Trace:
    entries.sort(key=lambda e: as_utc(e.at))
    return Trace(subject=subject, entries=entries[-limit:])


@router.get("/trace/cabinets/{cabinet_id}", response_model=Trace)
async def trace_cabinet(cabinet_id: str, session: SessionDep, principal: Staff, limit: TraceLimit = 500) -> Trace:
    """Everything that happened at a cabinet, in order: device messages, commands, online/offline
    transitions, custody changes in its slots, alerts and work-order steps (the newest `limit`)."""
    city = await cabinet_city(session, cabinet_id)
    if city is None:
        raise Problem(404, "Unknown cabinet", f"no cabinet {cabinet_id!r}")
    principal.check_city(city, "cabinet", cabinet_id)
    entries: list[TraceEntry] = []
    for m in await session.scalars(
        select(DeviceMessage)
        .where(DeviceMessage.cabinet_id == cabinet_id)
        .order_by(DeviceMessage.id.desc())
        .limit(limit)
    ):
        entries.append(
            TraceEntry(
                at=m.received_at,
                kind="device_message",
                summary=f"{m.kind} ({m.message_id})",
                data={"topic": m.topic, "payload": m.payload, "workflow_id": m.workflow_id},
            )
        )
    for c in await session.scalars(
        select(DeviceCommand)
        .where(DeviceCommand.cabinet_id == cabinet_id)
        .order_by(DeviceCommand.sent_at.desc())
        .limit(limit)
    ):
        outcome = "no ack" if c.acked_at is None else ("ok" if c.ok else f"refused: {c.error}")
        entries.append(
            TraceEntry(
                at=c.sent_at,
                kind="command",
                summary=f"{c.action} slot {c.slot_no}: {outcome}",
                data={
                    "command_id": c.id,
                    "workflow_id": c.workflow_id,
                    "acked_at": c.acked_at.isoformat() if c.acked_at else None,
                },
            )
        )
    for t in await session.scalars(
        select(CabinetPresence)
        .where(CabinetPresence.cabinet_id == cabinet_id)
        .order_by(CabinetPresence.at.desc())
        .limit(limit)
    ):
        entries.append(TraceEntry(at=t.at, kind="online", summary=f"{'online' if t.online else 'offline'} ({t.cause})"))
    slot_prefix = f"{cabinet_id}/%"
    for e in await session.scalars(
        select(CustodyEvent)
        .where(or_(CustodyEvent.from_ref.like(slot_prefix), CustodyEvent.to_ref.like(slot_prefix)))
        .order_by(CustodyEvent.id.desc())
        .limit(limit)
    ):
        entries.append(_custody_entry(e))
    entries += await _alert_and_order_entries(
        session,
        select(Alert).where(Alert.cabinet_id == cabinet_id),
        select(WorkOrder.id).where(WorkOrder.cabinet_id == cabinet_id),
        limit,
    )
    return _ordered(f"cabinet {cabinet_id}", entries, limit)


def _custody_entry(e: CustodyEvent) -> TraceEntry:
    return TraceEntry(
        at=e.at,
        kind="custody",
        summary=f"{e.battery_serial}: {e.from_kind} {e.from_ref} → {e.to_kind} {e.to_ref} ({e.reason})",
        data={"order_id": e.order_id, "key": e.key},
    )


async def _alert_and_order_entries(session: AsyncSession, alerts: Any, orders: Any, limit: int) -> list[TraceEntry]:
    entries = []
    for a in await session.scalars(alerts.order_by(Alert.id.desc()).limit(limit)):
        entries.append(
            TraceEntry(
                at=a.created_at,
                kind="alert",
                summary=f"{a.kind} ({a.severity}) opened: {a.message}",
                data={"alert_id": a.id},
            )
        )
        if a.resolved_at:
            entries.append(
                TraceEntry(at=a.resolved_at, kind="alert", summary=f"{a.kind} resolved", data={"alert_id": a.id})
            )
    for ev in await session.scalars(
        select(WorkOrderEvent)
        .where(WorkOrderEvent.work_order_id.in_(orders))
        .order_by(WorkOrderEvent.id.desc())
        .limit(limit)
    ):
        entries.append(
            TraceEntry(
                at=ev.at,
                kind="work_order",
                summary=f"{ev.work_order_id}: {ev.kind} {ev.detail}",
                data={"actor": ev.actor, "work_order_id": ev.work_order_id},
            )
        )
    return entries


@router.get("/trace/batteries/{serial}", response_model=Trace)
async def trace_battery(serial: str, session: SessionDep, principal: Staff, limit: TraceLimit = 500) -> Trace:
    """Everything that happened to a pack, in order: device messages that name it, custody changes,
    safety checks, alerts and the work orders of the slots it was quarantined in."""
    battery = await session.get(Battery, serial)
    if battery is None:
        raise Problem(404, "Unknown battery", f"no battery {serial!r}")
    city = await battery_city(session, battery)
    if city is None and principal.cities is not None:
        raise Problem(404, "Unknown battery", f"no battery {serial!r}")
    principal.check_city(city or "", "battery", serial)
    entries: list[TraceEntry] = []
    mentions = or_(DeviceMessage.topic.contains(f"/{serial}/"), cast(DeviceMessage.payload, String).contains(serial))
    messages = select(DeviceMessage).where(mentions).order_by(DeviceMessage.id.desc()).limit(limit)
    for m in await session.scalars(messages):
        entries.append(
            TraceEntry(
                at=m.received_at,
                kind="device_message",
                summary=f"{m.kind} at {m.cabinet_id} ({m.message_id})",
                data={"topic": m.topic, "payload": m.payload, "workflow_id": m.workflow_id},
            )
        )
    for e in await session.scalars(
        select(CustodyEvent).where(CustodyEvent.battery_serial == serial).order_by(CustodyEvent.id.desc()).limit(limit)
    ):
        entries.append(_custody_entry(e))
    for s in await session.scalars(
        select(SafetyEvent).where(SafetyEvent.battery_serial == serial).order_by(SafetyEvent.id.desc()).limit(limit)
    ):
        entries.append(
            TraceEntry(
                at=s.at,
                kind="safety",
                summary=f"{s.verdict} at {s.cabinet_id}/{s.slot_no}",
                data={"reasons": s.reasons, "order_id": s.order_id},
            )
        )
    quarantined_slots = select(Alert.cabinet_id, Alert.slot_no).where(Alert.battery_serial == serial)
    slot_keys = [f"{c}/{n or '-'}" for c, n in (await session.execute(quarantined_slots)).tuples()]
    entries += await _alert_and_order_entries(
        session,
        select(Alert).where(Alert.battery_serial == serial),
        select(WorkOrder.id).where(WorkOrder.dedupe_key.in_(slot_keys)),
        limit,
    )
    return _ordered(f"battery {serial}", entries, limit)
