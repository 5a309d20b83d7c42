"""The work order's activities: its timeline, dispatch, escalation, the live check of a fix, closing.
Each is idempotent."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity
from temporalio.exceptions import ApplicationError

from swapflow.db.engine import Database
from swapflow.db.network import Battery, Cabinet, Slot, Station
from swapflow.db.ops import WorkOrder, WorkOrderEvent
from swapflow.domain.checks import present
from swapflow.domain.clock import utcnow
from swapflow.domain.network import BatteryStatus, CabinetCapability
from swapflow.domain.ops import WorkOrderStatus
from swapflow.ops.alerts import raise_alert
from swapflow.ops.dispatch import city_lead, nearest_on_duty
from swapflow.settings import Settings
from swapflow.workflows.swap_contract import FaultReport
from swapflow.workflows.work_order_contract import (
    DispatchRequest,
    DispatchResult,
    EscalationRequest,
    LiveCheck,
    WorkOrderStep,
)


class WorkOrderActivities:
    """A work order's steps bound to this worker's database and settings."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    async def _record(self, session: AsyncSession, step: WorkOrderStep) -> WorkOrder:
        order = await session.get(WorkOrder, step.work_order_id)
        if order is None:
            raise ApplicationError(f"no work order {step.work_order_id!r}", non_retryable=True)
        done = await session.scalar(
            select(WorkOrderEvent.id).where(
                WorkOrderEvent.work_order_id == step.work_order_id, WorkOrderEvent.seq == step.seq
            )
        )
        if done is not None:
            return order  # a retry: recorded already
        now = utcnow()
        session.add(
            WorkOrderEvent(
                work_order_id=step.work_order_id,
                seq=step.seq,
                kind=step.kind,
                actor=step.actor,
                detail=step.detail,
                at=now,
            )
        )
        if step.status is not None:
            order.status = step.status
        if step.technician_id is not None:
            order.technician_id = step.technician_id
        if step.clear_technician:
            order.technician_id = None
        if step.acked and order.acked_at is None:
            order.acked_at = now
        if step.reopened:
            order.reopen_count += 1
        if step.closed:
            order.closed_at = now
        return order

    @activity.defn(name="record_work_order_step")
    async def record_step(self, step: WorkOrderStep) -> None:
        """Append a step to the work order's timeline and apply its changes to the row."""
        async with self.db.transaction() as session:
            await self._record(session, step)

    @activity.defn(name="dispatch_work_order")
    async def dispatch(self, request: DispatchRequest) -> DispatchResult:
        """Assign the named technician, or the nearest on duty in the cabinet's city; record either."""
        async with self.db.transaction() as session:
            order = await session.get(WorkOrder, request.work_order_id)
            if order is None:
                raise ApplicationError(f"no work order {request.work_order_id!r}", non_retryable=True)
            station = await session.scalar(
                select(Station).join(Cabinet, Cabinet.station_id == Station.id).where(Cabinet.id == order.cabinet_id)
            )
            if station is None:
                raise LookupError(f"station of cabinet {order.cabinet_id} is missing")
            chosen: tuple[str, float] | None
            if request.technician_id is not None:
                chosen = (request.technician_id, 0.0)
            else:
                chosen = await nearest_on_duty(
                    session, order.city_code, station.lat, station.lon, utcnow(), request.exclude
                )
            if chosen is None:
                await self._record(
                    session,
                    WorkOrderStep(
                        work_order_id=order.id,
                        seq=request.seq,
                        kind="unassigned",
                        actor=request.actor,
                        detail=f"no technician on duty in {order.city_code}",
                        status=WorkOrderStatus.UNASSIGNED,
                        clear_technician=True,
                    ),
                )
                return DispatchResult(technician_id=None)
            technician, km = chosen
            await self._record(
                session,
                WorkOrderStep(
                    work_order_id=order.id,
                    seq=request.seq,
                    kind="dispatched",
                    actor=request.actor,
                    detail=f"to {technician}" + (f", {km:.1f} km away" if request.technician_id is None else ""),
                    status=WorkOrderStatus.DISPATCHED,
                    technician_id=technician,
                ),
            )
            return DispatchResult(technician_id=technician, distance_km=round(km, 3))

    @activity.defn(name="escalate_work_order")
    async def escalate(self, request: EscalationRequest) -> str | None:
        """An SLA timer fired: hand the work order to the city's ops lead and raise an alert about it."""
        async with self.db.transaction() as session:
            order = await session.get(WorkOrder, request.work_order_id)
            if order is None:
                raise ApplicationError(f"no work order {request.work_order_id!r}", non_retryable=True)
            lead = await city_lead(session, order.city_code)
            await self._record(
                session,
                WorkOrderStep(
                    work_order_id=order.id,
                    seq=request.seq,
                    kind="escalated",
                    actor=None,
                    detail=f"{request.timer} SLA of {request.limit_s:.0f} s breached; escalated to {lead or 'nobody'}",
                ),
            )
            order.escalated_to = lead
            await raise_alert(
                session,
                FaultReport(
                    kind=f"work_order_{request.timer}_sla",
                    severity="critical",
                    cabinet_id=order.cabinet_id,
                    slot_no=order.slot_no,
                    message=f"work order {order.id}: {request.timer} SLA breached; escalated to {lead or 'nobody'}",
                ),
            )
            return lead

    @activity.defn(name="check_work_order_live_state")
    async def check_live(self, work_order_id: str) -> LiveCheck:
        """Whether the live state shows the device fixed: the cabinet online (if it reports), the slot's
        fault cleared, no quarantined pack left in it and none that custody does not hold there. Also names
        the slot for a test command."""
        async with self.db.sessions() as session:
            order = await session.get(WorkOrder, work_order_id)
            if order is None:
                raise ApplicationError(f"no work order {work_order_id!r}", non_retryable=True)
            cabinet = present(await session.get(Cabinet, order.cabinet_id), f"cabinet {order.cabinet_id}")
            problems = []
            reporting = cabinet.capability == CabinetCapability.REPORTING
            if reporting and not cabinet.online:
                problems.append("cabinet offline")
            test_slot = order.slot_no
            if order.slot_no is not None:
                slot = await session.scalar(
                    select(Slot).where(Slot.cabinet_id == order.cabinet_id, Slot.slot_no == order.slot_no)
                )
                if slot is None:
                    raise ApplicationError(f"no slot {order.slot_no}", non_retryable=True)
                if slot.fault:
                    problems.append(f"slot reports {slot.fault}")
                if slot.battery_serial:
                    battery = await session.get(Battery, slot.battery_serial)
                    if battery is not None and battery.status == BatteryStatus.QUARANTINED:
                        problems.append(f"quarantined pack {battery.serial} still in the slot")
                if slot.reported_serial and slot.reported_serial != slot.battery_serial:
                    # A pack that is not ours (or not where custody has it) must leave before swaps resume.
                    problems.append(
                        f"the cabinet reports pack {slot.reported_serial} in the slot, which custody does not hold"
                    )
            else:  # a cabinet-wide order: any slot not in a swap answers the test
                test_slot = await session.scalar(
                    select(func.min(Slot.slot_no)).where(
                        Slot.cabinet_id == order.cabinet_id, Slot.reserved_order_id.is_(None)
                    )
                )
        return LiveCheck(work_order_id=work_order_id, problems=tuple(problems), test_slot_no=test_slot)

    @activity.defn(name="close_work_order")
    async def close(self, step: WorkOrderStep) -> None:
        """Close a verified work order and put its slot back in service (unlocked, fault cleared)."""
        async with self.db.transaction() as session:
            order = await self._record(session, step)
            if order.slot_no is not None:
                slot = await session.scalar(
                    select(Slot).where(Slot.cabinet_id == order.cabinet_id, Slot.slot_no == order.slot_no)
                )
                if slot is not None and slot.reserved_order_id is None:
                    slot.out_of_service = None
                    slot.locked = False
