"""A battery pack: its latest BMS state, where it is, its lifecycle, whether it is ready to be issued,
and its recent history (a time series of readings)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from swapflow.api.auth import STAFF, Principal, require
from swapflow.api.deps import SessionDep, SettingsDep
from swapflow.db.cities import battery_city
from swapflow.device_adapter.battery_state import readiness
from swapflow.domain.clock import as_utc
from swapflow.domain.network import BatteryStatus, CustodianKind
from swapflow.domain.ops import OperatorRole
from swapflow.services import batteries

router = APIRouter(prefix="/v1/batteries", tags=["batteries"])

StaffOrTechnician = Annotated[Principal, Depends(require(*STAFF, OperatorRole.TECHNICIAN))]


class BatteryReadingView(BaseModel):
    at: datetime
    soc: float
    soh: float
    voltage_v: float
    current_a: float
    temperature_c: float
    cycle_count: int
    cabinet_id: str | None
    slot_no: int | None


class BatterySlotView(BaseModel):
    """The slot holding the pack (custody), and what the cabinet reports of it."""

    cabinet_id: str
    slot_no: int
    charging: bool


class BatteryView(BaseModel):
    serial: str
    model: str
    chemistry: str
    rated_capacity_mah: int
    status: BatteryStatus
    custodian_kind: CustodianKind
    custodian_ref: str
    slot: BatterySlotView | None
    soc: float
    soh: float
    voltage_v: float
    current_a: float | None
    temperature_c: float
    cycle_count: int
    charge_state: str | None
    reading_at: datetime | None
    ready: bool
    not_ready_because: list[str]
    history: list[BatteryReadingView]


@router.get("/{serial}", response_model=BatteryView)
async def get_battery(
    serial: str,
    session: SessionDep,
    settings: SettingsDep,
    principal: StaffOrTechnician,
    hours: Annotated[float, Query(gt=0, le=24 * 90, description="How far back the history goes.")] = 24.0,
    limit: Annotated[int, Query(ge=0, le=5000, description="At most this many readings, newest first.")] = 500,
) -> BatteryView:
    """One pack with its recent readings, newest first (ops and technicians of the city it is in)."""
    battery = await batteries.find_battery(session, serial)
    if principal.cities is not None:
        principal.check_city(await battery_city(session, battery) or "", "battery", serial)
    slot = await batteries.slot_of(session, serial)
    history = await batteries.history(session, serial, hours=hours, limit=limit)
    reasons = readiness(battery, slot, settings)
    return BatteryView(
        serial=battery.serial,
        model=battery.model,
        chemistry=battery.chemistry,
        rated_capacity_mah=battery.rated_capacity_mah,
        status=battery.status,
        custodian_kind=battery.custodian_kind,
        custodian_ref=battery.custodian_ref,
        slot=BatterySlotView(cabinet_id=slot.cabinet_id, slot_no=slot.slot_no, charging=slot.charging)
        if slot is not None
        else None,
        soc=battery.soc,
        soh=battery.soh,
        voltage_v=battery.voltage_v,
        current_a=battery.current_a,
        temperature_c=battery.temperature_c,
        cycle_count=battery.cycle_count,
        charge_state=battery.charge_state,
        reading_at=as_utc(battery.reading_at) if battery.reading_at else None,
        ready=not reasons,
        not_ready_because=reasons,
        history=[
            BatteryReadingView(
                at=as_utc(r.at),
                soc=r.soc,
                soh=r.soh,
                voltage_v=r.voltage_v,
                current_a=r.current_a,
                temperature_c=r.temperature_c,
                cycle_count=r.cycle_count,
                cabinet_id=r.cabinet_id,
                slot_no=r.slot_no,
            )
            for r in history
        ],
    )
