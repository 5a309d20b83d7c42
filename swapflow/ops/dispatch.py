"""Who fixes it: the nearest technician of the cabinet's city who is on shift now."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.identity import Operator
from swapflow.db.network import City
from swapflow.db.ops import Technician
from swapflow.domain.geo import distance_km
from swapflow.domain.ops import OperatorRole


def on_shift(technician: Technician, local: datetime) -> bool:
    """Whether `local` (city time) falls in the technician's shift; a shift may run over midnight."""
    minute = local.hour * 60 + local.minute
    start, end = technician.shift_start_minute, technician.shift_end_minute
    return start <= minute < end if start <= end else (minute >= start or minute < end)


async def nearest_on_duty(
    session: AsyncSession, city_code: str, lat: float, lon: float, now: datetime, exclude: Collection[str] = ()
) -> tuple[str, float] | None:
    """(technician id, distance in km) of the nearest active technician of the city on shift at `now`."""
    city = await session.get(City, city_code)
    if city is None:
        return None
    local = now.astimezone(ZoneInfo(city.timezone))
    rows = (
        (
            await session.execute(
                select(Technician)
                .join(Operator, Operator.id == Technician.operator_id)
                .where(
                    Technician.city_code == city_code,
                    Operator.active.is_(True),
                    Operator.role == OperatorRole.TECHNICIAN,
                )
            )
        )
        .scalars()
        .all()
    )
    candidates = sorted(
        (distance_km(lat, lon, t.lat, t.lon), t.operator_id)
        for t in rows
        if t.operator_id not in exclude and on_shift(t, local)
    )
    return (candidates[0][1], candidates[0][0]) if candidates else None


async def city_lead(session: AsyncSession, city_code: str) -> str | None:
    """The ops lead of a city: its first active city-lead account."""
    leads = await session.scalars(
        select(Operator).where(Operator.role == OperatorRole.CITY_LEAD, Operator.active.is_(True)).order_by(Operator.id)
    )
    return next((lead.id for lead in leads if city_code in lead.cities), None)
