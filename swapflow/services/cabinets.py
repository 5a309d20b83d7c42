"""Finding a cabinet: each with its station and live counts of packs ready to issue, packs held for
riders' reservations and free slots, nearest first around a point; and the packs a cabinet has ready."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.network import Battery, Cabinet, Slot, Station
from swapflow.domain.errors import NotFound
from swapflow.domain.geo import distance_km
from swapflow.domain.network import BatteryStatus
from swapflow.settings import Settings


@dataclass(frozen=True)
class CabinetStatus:
    """A cabinet with its station, packs ready to issue (to anyone: not held for a reservation), packs held
    for riders' reservations, and free slots (and how far, from a point)."""

    cabinet: Cabinet
    station: Station
    ready: int
    free: int
    distance_km: float | None = None
    reserved: int = 0


def _in_service() -> ColumnElement[bool]:
    """A slot not locked, faulty or out of service."""
    return and_(Slot.locked.is_(False), Slot.fault.is_(None), Slot.out_of_service.is_(None))


def _usable() -> ColumnElement[bool]:
    """A slot a swap may use: in service, not reserved by a swap nor held for a rider's reservation."""
    return and_(_in_service(), Slot.reserved_order_id.is_(None), Slot.reservation_id.is_(None))


def charged_pack(settings: Settings) -> ColumnElement[bool]:
    """A slot's pack (Battery joined on the slot's serial) is charged and healthy enough to issue."""
    return and_(
        Battery.status == BatteryStatus.IN_SERVICE,
        Battery.soc >= settings.swap.ready_soc_threshold,
        Battery.soh >= settings.swap.min_soh,
    )


def _ready(settings: Settings) -> ColumnElement[bool]:
    """A usable slot holding a pack ready to issue (in service, charged, healthy)."""
    return and_(_usable(), charged_pack(settings))


def _status_query(settings: Settings) -> Select[Any]:
    """Cabinets with their station and live counts of ready packs, reserved packs and free slots."""
    usable, ready = _usable(), _ready(settings)
    held = and_(_in_service(), Slot.reserved_order_id.is_(None), Slot.reservation_id.is_not(None))
    return (
        select(
            Cabinet,
            Station,
            func.coalesce(func.sum(case((ready, 1), else_=0)), 0).label("ready"),
            func.coalesce(func.sum(case((and_(usable, Slot.battery_serial.is_(None)), 1), else_=0)), 0).label("free"),
            func.coalesce(func.sum(case((held, 1), else_=0)), 0).label("reserved"),
        )
        .join(Station, Station.id == Cabinet.station_id)
        .outerjoin(Slot, Slot.cabinet_id == Cabinet.id)
        .outerjoin(Battery, Battery.serial == Slot.battery_serial)
        .group_by(Cabinet.id, Station.id)
    )


async def cabinets(
    session: AsyncSession,
    settings: Settings,
    *,
    city: str | None,
    near: tuple[float, float] | None,
    radius_km: float,
    limit: int,
) -> list[CabinetStatus]:
    """Cabinets with live status, of `city` if named; with `near` (lat, lon), those within `radius_km`,
    nearest first; else by id."""
    query = _status_query(settings)
    if city:
        query = query.where(Station.city_code == city)
    if near is None:
        rows = (await session.execute(query.order_by(Cabinet.id).limit(limit))).all()
        return [CabinetStatus(c, s, int(r), int(f), reserved=int(h)) for c, s, r, f, h in rows]
    lat, lon = near
    # A bounding box the index can use, then the exact distance.
    dlat = radius_km / 111.0
    dlon = radius_km / max(1e-6, 111.0 * math.cos(math.radians(lat)))
    query = query.where(Station.lat.between(lat - dlat, lat + dlat), Station.lon.between(lon - dlon, lon + dlon))
    found = [
        CabinetStatus(c, s, int(r), int(f), distance_km(lat, lon, s.lat, s.lon), int(h))
        for c, s, r, f, h in (await session.execute(query)).all()
    ]
    within = [status for status in found if status.distance_km is not None and status.distance_km <= radius_km]
    return sorted(within, key=lambda status: status.distance_km or 0.0)[:limit]


async def cabinet(session: AsyncSession, settings: Settings, cabinet_id: str) -> tuple[CabinetStatus, list[Slot]]:
    """One cabinet with live status and its slots in order, or NotFound."""
    row = (await session.execute(_status_query(settings).where(Cabinet.id == cabinet_id))).first()
    if row is None:
        raise NotFound("cabinet", cabinet_id)
    found, station, ready, free, reserved = row
    slots = (await session.scalars(select(Slot).where(Slot.cabinet_id == cabinet_id).order_by(Slot.slot_no))).all()
    return CabinetStatus(found, station, int(ready), int(free), reserved=int(reserved)), list(slots)


async def ready_packs(session: AsyncSession, settings: Settings, cabinet_id: str) -> list[tuple[int, Battery]]:
    """The packs of a cabinet ready to issue now (none held for a reservation), with their slots, fullest first."""
    rows = await session.execute(
        select(Slot.slot_no, Battery)
        .join(Battery, Battery.serial == Slot.battery_serial)
        .where(Slot.cabinet_id == cabinet_id, _ready(settings))
        .order_by(Battery.soc.desc(), Slot.slot_no)
    )
    return [(slot_no, battery) for slot_no, battery in rows.tuples()]
