"""Finding a cabinet: live status (online, ready batteries, free slots), nearest first."""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import Select, and_, case, func, select

from swapflow.api.deps import SessionDep, SettingsDep
from swapflow.api.problems import Problem
from swapflow.api.schemas import CabinetDetail, CabinetSummary, SlotView
from swapflow.db.network import Battery, Cabinet, Slot, Station
from swapflow.domain.geo import distance_km
from swapflow.domain.network import BatteryStatus, CabinetCapability
from swapflow.settings import Settings

router = APIRouter(prefix="/v1/cabinets", tags=["cabinets"])

_LAT = r"-?(90(\.0+)?|[1-8]?[0-9](\.[0-9]+)?)"
_LON = r"-?(180(\.0+)?|(1[0-7][0-9]|[1-9]?[0-9])(\.[0-9]+)?)"
NEAR_PATTERN = rf"^ *{_LAT} *, *{_LON} *$"
"""A coordinate, 'lat,lon' in decimal degrees: the OpenAPI document says what the API accepts."""


def parse_near(near: str) -> tuple[float, float]:
    """'lat,lon' (as NEAR_PATTERN checked it) → (lat, lon)."""
    lat, lon = near.split(",")
    return float(lat), float(lon)


def _status_query(settings: Settings) -> Select[Any]:
    """Cabinets with their station and live counts of ready packs and free slots."""
    usable = and_(
        Slot.reserved_order_id.is_(None), Slot.locked.is_(False), Slot.fault.is_(None), Slot.out_of_service.is_(None)
    )
    ready = and_(
        usable,
        Battery.status == BatteryStatus.IN_SERVICE,
        Battery.soc >= settings.ready_soc_threshold,
        Battery.soh >= settings.min_soh,
    )
    return (
        select(
            Cabinet,
            Station,
            func.coalesce(func.sum(case((ready, 1), else_=0)), 0).label("ready"),
            func.coalesce(func.sum(case((and_(usable, Slot.battery_serial.is_(None)), 1), else_=0)), 0).label("free"),
        )
        .join(Station, Station.id == Cabinet.station_id)
        .outerjoin(Slot, Slot.cabinet_id == Cabinet.id)
        .outerjoin(Battery, Battery.serial == Slot.battery_serial)
        .group_by(Cabinet.id, Station.id)
    )


def _summary(cabinet: Cabinet, station: Station, ready: int, free: int, distance: float | None) -> CabinetSummary:
    return CabinetSummary(
        id=cabinet.id,
        station_id=station.id,
        station_name=station.name,
        city_code=station.city_code,
        lat=station.lat,
        lon=station.lon,
        distance_km=None if distance is None else round(distance, 3),
        # A command-only cabinet never reports, so whether it is online is not known.
        online=None if cabinet.capability == CabinetCapability.COMMAND_ONLY else cabinet.online,
        capability=cabinet.capability,
        ready_batteries=int(ready),
        free_slots=int(free),
        slot_count=cabinet.slot_count,
        last_seen_at=cabinet.last_seen_at,
    )


@router.get("", response_model=list[CabinetSummary])
async def list_cabinets(
    session: SessionDep,
    settings: SettingsDep,
    near: Annotated[
        str | None, Query(description="lat,lon: nearest first", examples=["31.23,121.47"], pattern=NEAR_PATTERN)
    ] = None,
    radius_km: Annotated[float, Query(gt=0, le=500)] = 20.0,
    city: Annotated[str | None, Query(max_length=16)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 20,
) -> list[CabinetSummary]:
    """Cabinets with live status; with `near`, those within `radius_km`, nearest first."""
    query = _status_query(settings)
    if city:
        query = query.where(Station.city_code == city)
    if near is None:
        rows = (await session.execute(query.order_by(Cabinet.id).limit(limit))).all()
        return [_summary(c, s, r, f, None) for c, s, r, f in rows]
    lat, lon = parse_near(near)
    # A bounding box the index can use, then the exact distance.
    dlat = radius_km / 111.0
    dlon = radius_km / max(1e-6, 111.0 * math.cos(math.radians(lat)))
    query = query.where(Station.lat.between(lat - dlat, lat + dlat), Station.lon.between(lon - dlon, lon + dlon))
    found = [(distance_km(lat, lon, s.lat, s.lon), c, s, r, f) for c, s, r, f in (await session.execute(query)).all()]
    found = sorted((row for row in found if row[0] <= radius_km), key=lambda row: row[0])[:limit]
    return [_summary(c, s, r, f, d) for d, c, s, r, f in found]


@router.get("/{cabinet_id}", response_model=CabinetDetail)
async def get_cabinet(cabinet_id: str, session: SessionDep, settings: SettingsDep) -> CabinetDetail:
    """One cabinet with the state of each slot."""
    row = (await session.execute(_status_query(settings).where(Cabinet.id == cabinet_id))).first()
    if row is None:
        raise Problem(404, "Unknown cabinet", f"no cabinet {cabinet_id!r}")
    cabinet, station, ready, free = row
    slots = (await session.scalars(select(Slot).where(Slot.cabinet_id == cabinet_id).order_by(Slot.slot_no))).all()
    return CabinetDetail(
        **_summary(cabinet, station, ready, free, None).model_dump(),
        slots=[
            SlotView(
                slot_no=s.slot_no,
                door=s.door,
                battery_serial=s.battery_serial,
                charging=s.charging,
                locked=s.locked,
                fault=s.fault,
                out_of_service=s.out_of_service,
                reserved=s.reserved_order_id is not None,
            )
            for s in slots
        ],
    )
