"""Finding a cabinet: live status (online, ready batteries, reserved ones apart, free slots), nearest first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from swapflow.api.deps import SessionDep, SettingsDep
from swapflow.api.schemas import CabinetDetail, CabinetSummary, SlotView
from swapflow.domain.network import CabinetCapability
from swapflow.services import cabinets
from swapflow.services.cabinets import CabinetStatus

router = APIRouter(prefix="/v1/cabinets", tags=["cabinets"])

_LAT = r"-?(90(\.0+)?|[1-8]?[0-9](\.[0-9]+)?)"
_LON = r"-?(180(\.0+)?|(1[0-7][0-9]|[1-9]?[0-9])(\.[0-9]+)?)"
NEAR_PATTERN = rf"^ *{_LAT} *, *{_LON} *$"
"""A coordinate, 'lat,lon' in decimal degrees: the OpenAPI document says what the API accepts."""


def parse_near(near: str) -> tuple[float, float]:
    """'lat,lon' (as NEAR_PATTERN checked it) → (lat, lon)."""
    lat, lon = near.split(",")
    return float(lat), float(lon)


def _summary(status: CabinetStatus) -> CabinetSummary:
    cabinet, station, distance = status.cabinet, status.station, status.distance_km
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
        ready_batteries=status.ready,
        reserved_batteries=status.reserved,
        free_slots=status.free,
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
    found = await cabinets.cabinets(
        session,
        settings,
        city=city,
        near=parse_near(near) if near is not None else None,
        radius_km=radius_km,
        limit=limit,
    )
    return [_summary(status) for status in found]


@router.get("/{cabinet_id}", response_model=CabinetDetail)
async def get_cabinet(cabinet_id: str, session: SessionDep, settings: SettingsDep) -> CabinetDetail:
    """One cabinet with the state of each slot."""
    status, slots = await cabinets.cabinet(session, settings, cabinet_id)
    return CabinetDetail(
        **_summary(status).model_dump(),
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
                held_for_reservation=s.reservation_id is not None,
            )
            for s in slots
        ],
    )
