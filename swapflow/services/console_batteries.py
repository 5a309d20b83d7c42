"""What the console shows of a battery pack: its SoC, SoH, voltage and temperature over time (from its
readings), its custody trail (who held it when) and its safety checks with the reading, the limits and
the verdict. Reads only; every listing bounded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.cities import battery_city
from swapflow.db.network import Battery
from swapflow.db.swaps import CustodyEvent, SafetyEvent
from swapflow.domain.clock import as_utc
from swapflow.services import batteries

HOURS = 24.0 * 7
READINGS = 2000
TRAIL = 200
CHECKS = 100

CHARTS = (
    ("soc", "State of charge (%)"),
    ("soh", "State of health (%)"),
    ("voltage_v", "Voltage (V)"),
    ("temperature_c", "Temperature (°C)"),
)
"""The charts on a pack's page: a reading's field and the chart's label."""


@dataclass(frozen=True)
class BatteryDetail:
    battery: Battery
    city_code: str | None
    charts: list[tuple[str, str, dict[str, Any]]]
    """(id, label, uPlot data) per chart, oldest reading first."""
    readings: int
    custody: list[CustodyEvent]
    safety: list[SafetyEvent]


async def battery_scope(session: AsyncSession, serial: str) -> tuple[Battery, str | None]:
    """The pack and the city it is in (None in a depot or in repair); NotFound if there is no such pack."""
    battery = await batteries.find_battery(session, serial)
    return battery, await battery_city(session, battery)


async def battery_detail(session: AsyncSession, battery: Battery, city_code: str | None) -> BatteryDetail:
    """The pack's charts (its readings of the last week), custody trail and safety checks, newest first."""
    readings = list(reversed(await batteries.history(session, battery.serial, hours=HOURS, limit=READINGS)))
    xs = [as_utc(r.at).timestamp() for r in readings]
    charts = [
        (
            f"chart-{field}",
            label,
            {"x": xs, "series": [{"label": label, "values": [getattr(r, field) for r in readings]}]},
        )
        for field, label in CHARTS
    ]
    custody = await session.scalars(
        select(CustodyEvent)
        .where(CustodyEvent.battery_serial == battery.serial)
        .order_by(CustodyEvent.at.desc(), CustodyEvent.id.desc())
        .limit(TRAIL)
    )
    safety = await session.scalars(
        select(SafetyEvent)
        .where(SafetyEvent.battery_serial == battery.serial)
        .order_by(SafetyEvent.at.desc(), SafetyEvent.id.desc())
        .limit(CHECKS)
    )
    return BatteryDetail(
        battery=battery,
        city_code=city_code,
        charts=charts,
        readings=len(readings),
        custody=list(custody),
        safety=list(safety),
    )
