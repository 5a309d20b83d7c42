"""Work orders: opening one (one open order per cabinet and slot), the workflow input with the SLA of
its severity, starting its workflow (the one place that says how; the alert evaluator starts the ones
its alerts open as children), the people's actions on it (workflow updates), and reading it."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError

from swapflow.db.cities import cabinet_city
from swapflow.db.engine import Database
from swapflow.db.network import Cabinet
from swapflow.db.ops import Technician, WorkOrder, WorkOrderEvent
from swapflow.domain.clock import utcnow
from swapflow.domain.errors import Conflict, Invalid, NotFound, Unavailable
from swapflow.domain.network import CabinetCapability
from swapflow.domain.ops import OPEN_WORK_ORDER_STATUSES, WorkOrderStatus
from swapflow.services.temporal import TemporalConnector, connect
from swapflow.settings import Settings
from swapflow.workflows.work_order import WorkOrderWorkflow
from swapflow.workflows.work_order_contract import WorkOrderInput, work_order_workflow_id

UNAVAILABLE = "Work orders unavailable"


def work_order_key(cabinet_id: str, slot_no: int | None) -> str:
    """One open work order per cabinet and slot (or cabinet as a whole)."""
    return f"{cabinet_id}/{slot_no or '-'}"


async def new_work_order(
    session: AsyncSession,
    *,
    cabinet_id: str,
    slot_no: int | None,
    kind: str,
    severity: str,
    source: str,
    description: str,
    alert_id: int | None = None,
) -> WorkOrder:
    """A new work order row (status new) for a cabinet and slot."""
    key = work_order_key(cabinet_id, slot_no)
    city = await cabinet_city(session, cabinet_id)
    if city is None:
        raise NotFound("cabinet", cabinet_id)
    # Readable, and unique beyond this database: a Temporal namespace outlives a reset database.
    order = WorkOrder(
        id=f"{cabinet_id}.{slot_no or 0}.{secrets.token_hex(4)}",
        dedupe_key=key,
        cabinet_id=cabinet_id,
        slot_no=slot_no,
        city_code=city,
        kind=kind,
        severity=severity,
        source=source,
        alert_id=alert_id,
        description=description,
        status=WorkOrderStatus.NEW,
        opened_at=utcnow(),
    )
    session.add(order)
    await session.flush()
    return order


async def open_work_order_for(session: AsyncSession, cabinet_id: str, slot_no: int | None) -> WorkOrder | None:
    """The open work order of a cabinet and slot, if any."""
    return await session.scalar(
        select(WorkOrder).where(
            WorkOrder.dedupe_key == work_order_key(cabinet_id, slot_no), WorkOrder.status.in_(OPEN_WORK_ORDER_STATUSES)
        )
    )


def work_order_input(settings: Settings, order: WorkOrder, capability: str) -> WorkOrderInput:
    """The workflow input of a work order, with the SLA of its severity."""
    sla = settings.ops.sla.get(order.severity) or settings.ops.sla["warning"]
    return WorkOrderInput(
        work_order_id=order.id,
        cabinet_id=order.cabinet_id,
        slot_no=order.slot_no,
        city_code=order.city_code,
        severity=order.severity,
        kind=order.kind,
        reporting=capability == CabinetCapability.REPORTING,
        ack_s=sla.ack_s,
        resolve_s=sla.resolve_s,
        verify_ack_timeout_s=settings.ops.verify_ack_timeout_s,
    )


async def start_work_order(client: Client, settings: Settings, request: WorkOrderInput) -> None:
    """Start a work order's workflow, or join the one running under its id."""
    await client.start_workflow(
        WorkOrderWorkflow.run,
        request,
        id=work_order_workflow_id(request.work_order_id),
        task_queue=settings.temporal.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )


async def cabinet_city_of(session: AsyncSession, cabinet_id: str) -> str:
    """The city of a cabinet, or NotFound."""
    city = await cabinet_city(session, cabinet_id)
    if city is None:
        raise NotFound("cabinet", cabinet_id)
    return city


async def open_manual_work_order(
    db: Database,
    settings: Settings,
    temporal: TemporalConnector,
    *,
    cabinet_id: str,
    slot_no: int | None,
    severity: str,
    description: str,
) -> tuple[WorkOrder, bool]:
    """An operator's work order for a cabinet (and slot), started; the open one of that cabinet and slot
    if there is one. Returns (work order, created)."""
    async with db.transaction() as session:
        cabinet = await session.get(Cabinet, cabinet_id)
        if cabinet is None or await cabinet_city(session, cabinet_id) is None:
            raise NotFound("cabinet", cabinet_id)
        if slot_no is not None and slot_no > cabinet.slot_count:
            raise Invalid(f"cabinet {cabinet.id} has no slot {slot_no}")
        order = await open_work_order_for(session, cabinet_id, slot_no)
        created = order is None
        if order is None:
            order = await new_work_order(
                session,
                cabinet_id=cabinet_id,
                slot_no=slot_no,
                kind="manual",
                severity=severity,
                source="operator",
                description=description,
            )
        request = work_order_input(settings, order, cabinet.capability)
    if created:
        # Without Temporal the row stays `new`: the alert evaluator starts its workflow on its next round.
        client = await connect(temporal, UNAVAILABLE)
        try:
            await start_work_order(client, settings, request)
        except (RuntimeError, RPCError) as exc:
            raise Unavailable(UNAVAILABLE, f"workflow service unreachable: {exc}") from exc
    async with db.sessions() as session:
        return await find_work_order(session, order.id), created


async def update_work_order(temporal: TemporalConnector, work_order_id: str, update: Any, argument: Any) -> None:
    """Pass a person's action to the work order's workflow (a workflow update): Conflict if the workflow
    says no or is not running, Unavailable without Temporal."""
    client = await connect(temporal, UNAVAILABLE)
    try:
        await client.get_workflow_handle(work_order_workflow_id(work_order_id)).execute_update(update, argument)
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        raise Conflict("Not possible now", str(getattr(cause, "message", cause) or exc)) from exc
    except RPCError as exc:
        raise Conflict("Not possible now", f"the work order's workflow is not running: {exc}") from exc
    except RuntimeError as exc:
        raise Unavailable(UNAVAILABLE, f"workflow service unreachable: {exc}") from exc


async def check_technician(session: AsyncSession, order: WorkOrder, technician_id: str) -> None:
    """Invalid unless `technician_id` is a technician of the order's city."""
    technician = await session.get(Technician, technician_id)
    if technician is None or technician.city_code != order.city_code:
        raise Invalid(f"{technician_id!r} is no technician of {order.city_code}")


async def find_work_order(session: AsyncSession, work_order_id: str) -> WorkOrder:
    """The work order, or NotFound."""
    order = await session.get(WorkOrder, work_order_id)
    if order is None:
        raise NotFound("work order", work_order_id)
    return order


async def timeline(session: AsyncSession, order: WorkOrder) -> list[WorkOrderEvent]:
    """The work order's steps, in order."""
    events = await session.scalars(
        select(WorkOrderEvent).where(WorkOrderEvent.work_order_id == order.id).order_by(WorkOrderEvent.seq)
    )
    return list(events)


async def work_orders(
    session: AsyncSession, *, cities: list[str] | None, status: str, technician_id: str | None, limit: int
) -> list[WorkOrder]:
    """Work orders of `cities` (None: all), newest first: `open` ones, those of one status, or `all`;
    with `technician_id`, that technician's only."""
    query = select(WorkOrder).order_by(WorkOrder.opened_at.desc()).limit(limit)
    if cities is not None:
        query = query.where(WorkOrder.city_code.in_(cities))
    if status == "open":
        query = query.where(WorkOrder.status.in_(OPEN_WORK_ORDER_STATUSES))
    elif status != "all":
        query = query.where(WorkOrder.status == status)
    if technician_id:
        query = query.where(WorkOrder.technician_id == technician_id)
    return list(await session.scalars(query))
