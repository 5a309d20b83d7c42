"""Ops pages: alerts (a page at a time with filters; acknowledge, resolve), work orders (a page at a
time with filters; one with its timeline and its workflow's history; staff's actions on it, as the
API's: reassign and cancel; the assigned technician's: accept and resolve) and the incident figures
(MTTA, MTTR and uptime per city, day by day) as charts. Operators, city leads and admins, of their
cities; technicians of their cities see the work orders only. Another city's alert or work order does
not exist for them (404)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.api.auth import STAFF, Principal
from swapflow.api.deps import DatabaseDep, SessionDep, SettingsDep, TemporalDep
from swapflow.console.rendering import render
from swapflow.console.session import console_require
from swapflow.db.ops import Alert, WorkOrder
from swapflow.domain.clock import as_utc, utcnow
from swapflow.domain.errors import DomainError, NotFound
from swapflow.domain.ops import OPEN_WORK_ORDER_STATUSES, OperatorRole, WorkOrderStatus
from swapflow.services import alerts, console_ops, console_swaps, work_orders
from swapflow.services.audit import audit_trail
from swapflow.settings import Settings
from swapflow.workflows.work_order import WorkOrderWorkflow
from swapflow.workflows.work_order_contract import Accept, Cancel, Reassign, Resolve, work_order_workflow_id

router = APIRouter()

Staff = Annotated[Principal, Depends(console_require(*STAFF))]
StaffOrTechnician = Annotated[Principal, Depends(console_require(*STAFF, OperatorRole.TECHNICIAN))]
Technician = Annotated[Principal, Depends(console_require(OperatorRole.TECHNICIAN))]
AlertId = Annotated[int, Path(ge=1, le=2**63 - 1)]
Note = Annotated[str, Form(max_length=2000)]
PAGE = 50
SEVERITIES = ("info", "warning", "critical")


def _htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"


def _query(**params: Any) -> str:
    """A listing's query string, without its empty filters."""
    return urlencode({key: value for key, value in params.items() if value not in (None, "")})


def _age(start: datetime, end: datetime | None) -> str:
    seconds = int(((as_utc(end) if end else utcnow()) - as_utc(start)).total_seconds())
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86_400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86_400} d {seconds % 86_400 // 3600} h"


def _cities(user: Principal) -> list[str] | None:
    return None if user.cities is None else sorted(user.cities)


# ---------------------------------------------------------------------------------- alerts


async def _visible_alert(session: AsyncSession, user: Principal, alert_id: int) -> tuple[Alert, str | None]:
    """The alert and its city, if the user may see it (a network-wide one: admins only)."""
    alert, city = await alerts.find_alert(session, alert_id)
    if city is None and user.cities is not None:
        raise NotFound("alert", alert_id)
    user.check_city(city or "", "alert", str(alert_id))
    return alert, city


@router.get("/alerts", response_class=HTMLResponse)
async def alert_list(
    request: Request,
    session: SessionDep,
    user: Staff,
    status: Annotated[console_ops.AlertFilter, Query()] = console_ops.AlertFilter.OPEN,
    kind: Annotated[str | None, Query(max_length=40)] = None,
    severity: Annotated[str | None, Query(max_length=16)] = None,
    city: Annotated[str | None, Query(max_length=16)] = None,
    cursor: Annotated[int | None, Query(ge=1)] = None,
) -> HTMLResponse:
    """Alerts of the user's cities, newest first, a page at a time."""
    kind, severity, city = kind or None, severity or None, city or None
    page = await console_ops.alert_page(
        session,
        cities=user.visible_cities(city),
        status=status,
        kind=kind,
        severity=severity,
        cursor=cursor,
        limit=PAGE,
    )
    filters = {"status": status.value, "kind": kind, "severity": severity, "city": city}
    return render(
        request,
        "ops/alerts.html",
        {
            "section": "alerts",
            "rows": page.rows,
            "filters": filters,
            "statuses": list(console_ops.AlertFilter),
            "kinds": await console_ops.alert_kinds(session),
            "severities": SEVERITIES,
            "cities": _cities(user),
            "age": _age,
            "next_query": _query(**filters, cursor=page.next_cursor) if page.next_cursor else None,
            "first_query": _query(**filters) if cursor else None,
        },
        user=user,
    )


async def _alert_answer(
    request: Request,
    db: DatabaseDep,
    user: Principal,
    alert_id: int,
    *,
    message: str | None = None,
    error: DomainError | None = None,
) -> HTMLResponse:
    """The alert's page, or (to an htmx form in a listing) its row, with what the last action said."""
    async with db.sessions() as session:
        alert, city = await _visible_alert(session, user, alert_id)
        context = {
            "section": "alerts",
            "alert": alert,
            "city": city,
            "age": _age,
            "message": message,
            "error": error,
        }
        if _htmx(request) and request.headers.get("HX-Target", "").startswith("alert-row-"):
            return render(request, "ops/_alert_row.html", context, user=user)
        context |= {
            "deliveries": await alerts.deliveries(session, alert_id),
            "trail": await audit_trail(session, "alert", str(alert_id)),
            "orders": await console_ops.work_orders_of_alert(session, alert_id),
        }
    status_code = 409 if error is not None and not _htmx(request) else 200
    template = "ops/_alert.html" if _htmx(request) else "ops/alert.html"
    return render(request, template, context, user=user, status_code=status_code)


@router.get("/alerts/{alert_id}", response_class=HTMLResponse)
async def alert_page(request: Request, alert_id: AlertId, db: DatabaseDep, user: Staff) -> HTMLResponse:
    """An alert: its facts, who acknowledged and resolved it, its deliveries, work orders and audit trail."""
    return await _alert_answer(request, db, user, alert_id)


@router.post("/alerts/{alert_id}/acknowledge", response_class=HTMLResponse)
async def acknowledge(request: Request, alert_id: AlertId, db: DatabaseDep, user: Staff) -> HTMLResponse:
    """The user takes the alert on."""
    async with db.sessions() as session:
        await _visible_alert(session, user, alert_id)
    try:
        async with db.transaction() as session:
            await alerts.acknowledge_alert(session, alert_id, actor=user.id)
    except DomainError as exc:
        return await _alert_answer(request, db, user, alert_id, error=exc)
    return await _alert_answer(request, db, user, alert_id, message=f"Alert {alert_id} acknowledged.")


@router.post("/alerts/{alert_id}/resolve", response_class=HTMLResponse)
async def resolve(request: Request, alert_id: AlertId, db: DatabaseDep, user: Staff, note: Note = "") -> HTMLResponse:
    """The user says the alert's problem is gone (a rule's alert whose condition holds opens again)."""
    async with db.sessions() as session:
        await _visible_alert(session, user, alert_id)
    try:
        async with db.transaction() as session:
            await alerts.resolve_alert(session, alert_id, actor=user.id, note=note.strip())
    except DomainError as exc:
        return await _alert_answer(request, db, user, alert_id, error=exc)
    return await _alert_answer(request, db, user, alert_id, message=f"Alert {alert_id} resolved.")


# ---------------------------------------------------------------------------------- work orders


async def _visible_order(session: AsyncSession, user: Principal, work_order_id: str) -> WorkOrder:
    order = await work_orders.find_work_order(session, work_order_id)
    user.check_city(order.city_code, "work order", work_order_id)
    return order


@router.get("/work-orders", response_class=HTMLResponse)
async def work_order_list(
    request: Request,
    session: SessionDep,
    user: StaffOrTechnician,
    status: Annotated[console_ops.WorkOrderFilter, Query()] = console_ops.WorkOrderFilter.OPEN,
    city: Annotated[str | None, Query(max_length=16)] = None,
    technician: Annotated[str | None, Query(max_length=40)] = None,
    severity: Annotated[str | None, Query(max_length=16)] = None,
    cabinet: Annotated[str | None, Query(max_length=40)] = None,
    cursor: Annotated[str | None, Query(max_length=80)] = None,
) -> HTMLResponse:
    """Work orders of the user's cities, latest opened first, a page at a time."""
    city, technician, severity, cabinet = city or None, technician or None, severity or None, cabinet or None
    page = await console_ops.work_order_page(
        session,
        cities=user.visible_cities(city),
        status=status,
        technician_id=technician,
        severity=severity,
        cabinet_id=cabinet,
        cursor=cursor or None,
        limit=PAGE,
    )
    filters = {
        "status": status.value,
        "city": city,
        "technician": technician,
        "severity": severity,
        "cabinet": cabinet,
    }
    return render(
        request,
        "ops/work_orders.html",
        {
            "section": "work-orders",
            "orders": page.orders,
            "filters": filters,
            "statuses": list(console_ops.WorkOrderFilter),
            "severities": SEVERITIES,
            "cities": _cities(user),
            "age": _age,
            "next_query": _query(**filters, cursor=page.next_cursor) if page.next_cursor else None,
            "first_query": _query(**filters) if cursor else None,
        },
        user=user,
    )


async def _order_answer(
    request: Request,
    db: DatabaseDep,
    settings: Settings,
    temporal: TemporalDep,
    user: Principal,
    work_order_id: str,
    *,
    message: str | None = None,
    error: DomainError | None = None,
) -> HTMLResponse:
    """The work order's page, or (to an htmx form) its part that changes, with what the last action said."""
    async with db.sessions() as session:
        order = await _visible_order(session, user, work_order_id)
        is_open = order.status in OPEN_WORK_ORDER_STATUSES
        assignee = user.role == OperatorRole.TECHNICIAN and order.technician_id == user.id
        context = {
            "section": "work-orders",
            "order": order,
            "timeline": await work_orders.timeline(session, order),
            "technicians": await console_ops.technicians_of(session, order.city_code),
            "workflow_id": work_order_workflow_id(order.id),
            "is_open": is_open,
            "staff": user.role in STAFF,
            "may_accept": assignee and order.status == WorkOrderStatus.DISPATCHED,
            "may_resolve": assignee and order.status == WorkOrderStatus.ACCEPTED,
            "age": _age,
            "message": message,
            "error": error,
        }
    context["history"] = await console_swaps.workflow_history(
        temporal, settings.temporal, work_order_workflow_id(work_order_id)
    )
    status_code = 409 if error is not None and not _htmx(request) else 200
    template = "ops/_work_order.html" if _htmx(request) else "ops/work_order.html"
    return render(request, template, context, user=user, status_code=status_code)


@router.get("/work-orders/{work_order_id}", response_class=HTMLResponse)
async def work_order_page(
    request: Request,
    work_order_id: str,
    db: DatabaseDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    user: StaffOrTechnician,
) -> HTMLResponse:
    """A work order: its facts, its timeline (each recorded step) and its workflow's history."""
    return await _order_answer(request, db, settings, temporal, user, work_order_id)


async def _update(
    request: Request,
    db: DatabaseDep,
    settings: Settings,
    temporal: TemporalDep,
    user: Principal,
    work_order_id: str,
    update: Any,
    argument: Any,
    done: str,
) -> HTMLResponse:
    """Pass the user's action to the work order's workflow, as the API does, and show the order (with
    what the workflow refused, if it did: not the assigned technician, not possible now)."""
    async with db.sessions() as session:
        await _visible_order(session, user, work_order_id)
    try:
        await work_orders.update_work_order(temporal, work_order_id, update, argument)
    except DomainError as exc:
        return await _order_answer(request, db, settings, temporal, user, work_order_id, error=exc)
    return await _order_answer(request, db, settings, temporal, user, work_order_id, message=done)


@router.post("/work-orders/{work_order_id}/accept", response_class=HTMLResponse)
async def accept(
    request: Request,
    work_order_id: str,
    db: DatabaseDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    user: Technician,
) -> HTMLResponse:
    """The assigned technician accepts the order."""
    accept = Accept(actor=user.id)
    return await _update(
        request, db, settings, temporal, user, work_order_id, WorkOrderWorkflow.accept, accept, "Work order accepted."
    )


@router.post("/work-orders/{work_order_id}/resolve", response_class=HTMLResponse)
async def resolve_order(
    request: Request,
    work_order_id: str,
    db: DatabaseDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    user: Technician,
    note: Note = "",
) -> HTMLResponse:
    """The assigned technician reports the fix; the workflow verifies it, then closes or reopens the order."""
    resolve = Resolve(actor=user.id, note=note.strip())
    done = "Fix reported: the device is being verified."
    return await _update(request, db, settings, temporal, user, work_order_id, WorkOrderWorkflow.resolve, resolve, done)


@router.post("/work-orders/{work_order_id}/cancel", response_class=HTMLResponse)
async def cancel(
    request: Request,
    work_order_id: str,
    db: DatabaseDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    user: Staff,
    reason: Note = "",
) -> HTMLResponse:
    """Cancel the order (nothing is verified; the slot stays as it is)."""
    cancel = Cancel(actor=user.id, reason=reason.strip())
    return await _update(
        request, db, settings, temporal, user, work_order_id, WorkOrderWorkflow.cancel, cancel, "Work order cancelled."
    )


@router.post("/work-orders/{work_order_id}/reassign", response_class=HTMLResponse)
async def reassign(
    request: Request,
    work_order_id: str,
    db: DatabaseDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    user: Staff,
    technician_id: Annotated[str, Form(max_length=40)] = "",
) -> HTMLResponse:
    """Give the order to another technician of its city (named, or the nearest other one on duty)."""
    technician = technician_id.strip() or None
    if technician is not None:
        try:
            async with db.sessions() as session:
                order = await _visible_order(session, user, work_order_id)
                await work_orders.check_technician(session, order, technician)
        except DomainError as exc:
            if isinstance(exc, NotFound):
                raise
            return await _order_answer(request, db, settings, temporal, user, work_order_id, error=exc)
    reassign = Reassign(actor=user.id, technician_id=technician)
    return await _update(
        request,
        db,
        settings,
        temporal,
        user,
        work_order_id,
        WorkOrderWorkflow.reassign,
        reassign,
        "Work order reassigned.",
    )


# ---------------------------------------------------------------------------------- figures


def _chart(
    chart_id: str, label: str, x: list[int], series: list[console_ops.CitySeries], scale: float
) -> dict[str, Any]:
    return {
        "id": chart_id,
        "label": label,
        "data": {
            "x": x,
            "series": [
                {
                    "label": s.city_code,
                    "values": [None if v is None else round(v * scale, 3) for v in s.values],
                }
                for s in series
            ],
            "steps": False,
        },
    }


@router.get("/figures", response_class=HTMLResponse)
async def figures(
    request: Request,
    session: SessionDep,
    user: Staff,
    days: Annotated[int, Query(ge=1, le=90)] = 14,
    city: Annotated[str | None, Query(max_length=16)] = None,
) -> HTMLResponse:
    """MTTA, MTTR and uptime per city, day by day (UTC days), as charts and as a table."""
    cities = user.visible_cities(city or None)
    starts = console_ops.day_starts(days)
    incidents = await console_ops.incident_series(session, starts, cities)
    uptime = await console_ops.uptime_series(session, starts, cities)
    x = console_ops.epoch_seconds(starts)
    charts = [
        _chart("mtta", "MTTA per day (minutes from opened to accepted)", x, incidents.mtta_s, 1 / 60),
        _chart("mttr", "MTTR per day (minutes from opened to verified closed)", x, incidents.mttr_s, 1 / 60),
        _chart("uptime", "Uptime per day (% of the observed time online)", x, uptime, 100),
    ]
    return render(
        request,
        "ops/figures.html",
        {
            "section": "figures",
            "charts": charts,
            "days": days,
            "day_labels": [start.astimezone(UTC).date().isoformat() for start in starts],
            "opened": incidents.opened,
            "filters": {"days": days, "city": city or ""},
            "cities": _cities(user),
        },
        user=user,
    )
