"""What the console shows of the network: each cabinet's state (online, offline, alert, no charged
pack) with counts per city, and a cabinet's page (slots, presence, swaps, commands, messages, dead
letters, alerts, work orders). Reads only; every listing bounded."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from swapflow.db.cities import topic_cabinet
from swapflow.db.devices import DeadLetter, DeviceCommand, DeviceMessage
from swapflow.db.network import Battery, Cabinet, CabinetPresence, City, Slot, Station
from swapflow.db.ops import Alert, WorkOrder
from swapflow.db.swaps import SwapOrder
from swapflow.domain.errors import NotFound
from swapflow.domain.network import BatteryStatus
from swapflow.domain.ops import AlertStatus, WorkOrderStatus
from swapflow.settings import Settings


class CabinetState(StrEnum):
    """What the console shows a cabinet as, the first that applies: an open alert, offline, online without
    a pack ready to issue, online."""

    ALERT = "alert"
    OFFLINE = "offline"
    NO_CHARGED_PACK = "no_charged_pack"
    ONLINE = "online"


AnySelect = TypeVar("AnySelect", bound="Select[*tuple[Any, ...]]")
CabinetIdColumn = ColumnElement[str] | InstrumentedAttribute[str]

STATE_ORDER = tuple(CabinetState)
"""Worst first: a station shows its worst cabinet's state."""


@dataclass(frozen=True)
class MapStation:
    """A station on the map: its place and how many of its cabinets are in each state."""

    id: str
    name: str
    lat: float
    lon: float
    counts: dict[CabinetState, int]

    @property
    def state(self) -> CabinetState:
        """Its worst cabinet's state."""
        return next(state for state in STATE_ORDER if self.counts[state])


@dataclass(frozen=True)
class CabinetRow:
    """A cabinet in the table: its state, and packs ready and alerts open."""

    id: str
    station_name: str
    city_code: str
    online: bool
    last_seen_at: datetime | None
    state: CabinetState
    ready: int
    open_alerts: int


@dataclass(frozen=True)
class Page:
    """One page of a listing: its rows, its number (from 1), and whether there are more."""

    rows: list[CabinetRow]
    number: int
    has_next: bool

    @property
    def has_previous(self) -> bool:
        return self.number > 1


def _ready_slots(settings: Settings, cabinet_id: CabinetIdColumn, *columns: Any) -> Select[Any]:
    """`columns` of the slots of `cabinet_id` holding a pack that could be issued now (as
    `services.cabinets` counts them)."""
    return (
        select(*columns)
        .select_from(Slot)
        .join(Battery, Battery.serial == Slot.battery_serial)
        .where(
            Slot.cabinet_id == cabinet_id,
            Slot.reserved_order_id.is_(None),
            Slot.reservation_id.is_(None),
            Slot.locked.is_(False),
            Slot.fault.is_(None),
            Slot.out_of_service.is_(None),
            Battery.status == BatteryStatus.IN_SERVICE,
            Battery.soc >= settings.swap.ready_soc_threshold,
            Battery.soh >= settings.swap.min_soh,
        )
    )


def _open_alerts(cabinet_id: CabinetIdColumn, *columns: Any) -> Select[Any]:
    return select(*columns).select_from(Alert).where(Alert.cabinet_id == cabinet_id, Alert.status == AlertStatus.OPEN)


def _state(settings: Settings) -> ColumnElement[str]:
    """A cabinet's state; EXISTS, not counts, so each cabinet costs an index probe or two."""
    return case(
        (_open_alerts(Cabinet.id, Alert.id).exists(), CabinetState.ALERT.value),
        (Cabinet.online.is_(False), CabinetState.OFFLINE.value),
        (~_ready_slots(settings, Cabinet.id, Slot.id).exists(), CabinetState.NO_CHARGED_PACK.value),
        else_=CabinetState.ONLINE.value,
    )


def _in_cities(query: AnySelect, cities: list[str] | None, city: str | None) -> AnySelect:
    query = query.join(Station, Station.id == Cabinet.station_id)
    if city is not None:
        return query.where(Station.city_code == city)
    if cities is not None:
        return query.where(Station.city_code.in_(cities))
    return query


async def cities(session: AsyncSession, visible: list[str] | None) -> list[City]:
    """The cities a caller may see (None: all), by code."""
    query = select(City).order_by(City.code)
    if visible is not None:
        query = query.where(City.code.in_(visible))
    return list(await session.scalars(query))


async def state_counts(session: AsyncSession, settings: Settings, city: str) -> dict[CabinetState, int]:
    """How many of a city's cabinets are in each state."""
    states = _in_cities(select(_state(settings).label("state")).select_from(Cabinet), None, city).subquery()
    rows = await session.execute(select(states.c.state, func.count()).group_by(states.c.state))
    found = {CabinetState(state): count for state, count in rows}
    return {state: found.get(state, 0) for state in STATE_ORDER}


async def map_stations(session: AsyncSession, settings: Settings, city: str) -> list[MapStation]:
    """Every station of a city with its cabinets counted by state (for the map): summed in the database,
    so a city of thousands of cabinets sends one row per station."""
    # Materialized: inlined, each count below would work out every cabinet's state again.
    cabinets = (
        _in_cities(select(Cabinet.station_id, _state(settings).label("state")).select_from(Cabinet), None, city)
        .cte("cabinet_states")
        .prefix_with("MATERIALIZED")
    )
    per_state = [func.sum(case((cabinets.c.state == state.value, 1), else_=0)) for state in STATE_ORDER]
    query = (
        select(Station.id, Station.name, Station.lat, Station.lon, *per_state)
        .join(cabinets, cabinets.c.station_id == Station.id)
        .group_by(Station.id, Station.name, Station.lat, Station.lon)
        .order_by(Station.id)
    )
    return [
        MapStation(station, name, lat, lon, dict(zip(STATE_ORDER, counts, strict=True)))
        for station, name, lat, lon, *counts in await session.execute(query)
    ]


async def cabinet_page(
    session: AsyncSession,
    settings: Settings,
    *,
    cities: list[str] | None,
    city: str | None,
    state: CabinetState | None,
    page: int,
    per_page: int,
    station: str | None = None,
) -> Page:
    """One page of cabinets, by id, of `city` (or every visible city), of `station` and in `state` if named: the page's
    ids first (a state probed only as far as the page reaches), then what the table shows of those."""
    ids_query = _in_cities(select(Cabinet.id).select_from(Cabinet), cities, city)
    if station is not None:
        ids_query = ids_query.where(Cabinet.station_id == station)
    if state is not None:
        ids_query = ids_query.where(_state(settings) == state.value)
    ids = list(await session.scalars(ids_query.order_by(Cabinet.id).offset((page - 1) * per_page).limit(per_page + 1)))
    query = (
        select(
            Cabinet.id,
            Station.name,
            Station.city_code,
            Cabinet.online,
            Cabinet.last_seen_at,
            _state(settings),
            _ready_slots(settings, Cabinet.id, func.count()).scalar_subquery(),
            _open_alerts(Cabinet.id, func.count()).scalar_subquery(),
        )
        .join(Station, Station.id == Cabinet.station_id)
        .where(Cabinet.id.in_(ids[:per_page]))
        .order_by(Cabinet.id)
    )
    rows = [
        CabinetRow(cabinet, name, code, online, seen, CabinetState(shown), ready or 0, alerts or 0)
        for cabinet, name, code, online, seen, shown, ready, alerts in await session.execute(query)
    ]
    return Page(rows, page, len(ids) > per_page)


@dataclass(frozen=True)
class SlotView:
    slot: Slot
    battery: Battery | None


@dataclass(frozen=True)
class CommandView:
    command: DeviceCommand
    round_trip_ms: float | None


@dataclass(frozen=True)
class CabinetDetail:
    cabinet: Cabinet
    station: Station
    state: CabinetState
    slots: list[SlotView]
    presence: list[CabinetPresence]
    online_before: bool | None
    """Whether it was online when the presence window starts (None: no transition known before)."""
    swaps: list[SwapOrder]
    commands: list[CommandView]
    messages: list[DeviceMessage]
    dead_letters: list[DeadLetter]
    alerts: list[Alert]
    work_orders: list[WorkOrder]


async def cabinet_city(session: AsyncSession, cabinet_id: str) -> str:
    """The city a cabinet is in, or NotFound."""
    city = await session.scalar(
        select(Station.city_code).join(Cabinet, Cabinet.station_id == Station.id).where(Cabinet.id == cabinet_id)
    )
    if city is None:
        raise NotFound("cabinet", cabinet_id)
    return city


async def cabinet_slots(session: AsyncSession, cabinet_id: str) -> list[SlotView]:
    """A cabinet's slots in order, each with the pack in it."""
    rows = await session.execute(
        select(Slot, Battery)
        .outerjoin(Battery, Battery.serial == Slot.battery_serial)
        .where(Slot.cabinet_id == cabinet_id)
        .order_by(Slot.slot_no)
    )
    return [SlotView(slot, battery) for slot, battery in rows]


async def cabinet_state(session: AsyncSession, settings: Settings, cabinet_id: str) -> CabinetState:
    state = await session.scalar(select(_state(settings)).select_from(Cabinet).where(Cabinet.id == cabinet_id))
    if state is None:
        raise NotFound("cabinet", cabinet_id)
    return CabinetState(state)


async def cabinet_detail(
    session: AsyncSession, settings: Settings, cabinet_id: str, *, now: datetime, limit: int = 20
) -> CabinetDetail:
    """Everything the cabinet page shows; each list its newest `limit` (presence: the last 24 h)."""
    row = (
        await session.execute(
            select(Cabinet, Station).join(Station, Station.id == Cabinet.station_id).where(Cabinet.id == cabinet_id)
        )
    ).one_or_none()
    if row is None:
        raise NotFound("cabinet", cabinet_id)
    cabinet, station = row
    since = now - timedelta(hours=24)
    presence = list(
        await session.scalars(
            select(CabinetPresence)
            .where(CabinetPresence.cabinet_id == cabinet_id, CabinetPresence.at >= since)
            .order_by(CabinetPresence.at)
            .limit(2000)
        )
    )
    online_before = await session.scalar(
        select(CabinetPresence.online)
        .where(CabinetPresence.cabinet_id == cabinet_id, CabinetPresence.at < since)
        .order_by(CabinetPresence.at.desc())
        .limit(1)
    )
    commands = list(
        await session.scalars(
            select(DeviceCommand)
            .where(DeviceCommand.cabinet_id == cabinet_id)
            .order_by(DeviceCommand.sent_at.desc())
            .limit(limit)
        )
    )
    topic_prefix = settings.mqtt.topic_prefix
    return CabinetDetail(
        cabinet=cabinet,
        station=station,
        state=await cabinet_state(session, settings, cabinet_id),
        slots=await cabinet_slots(session, cabinet_id),
        presence=presence,
        online_before=online_before,
        swaps=list(
            await session.scalars(
                select(SwapOrder)
                .where(SwapOrder.cabinet_id == cabinet_id)
                .order_by(SwapOrder.created_at.desc())
                .limit(limit)
            )
        ),
        commands=[
            CommandView(c, (c.acked_at - c.sent_at).total_seconds() * 1000 if c.acked_at and c.sent_at else None)
            for c in commands
        ],
        messages=list(
            await session.scalars(
                select(DeviceMessage)
                .where(DeviceMessage.cabinet_id == cabinet_id)
                .order_by(DeviceMessage.id.desc())
                .limit(limit)
            )
        ),
        dead_letters=list(
            await session.scalars(
                select(DeadLetter)
                .where(topic_cabinet(DeadLetter.topic, topic_prefix) == cabinet_id)
                .order_by(DeadLetter.id.desc())
                .limit(limit)
            )
        ),
        alerts=list(
            await session.scalars(
                select(Alert)
                .where(Alert.cabinet_id == cabinet_id, Alert.status == AlertStatus.OPEN)
                .order_by(Alert.id.desc())
                .limit(limit)
            )
        ),
        work_orders=list(
            await session.scalars(
                select(WorkOrder)
                .where(
                    WorkOrder.cabinet_id == cabinet_id,
                    WorkOrder.status.not_in([WorkOrderStatus.CLOSED, WorkOrderStatus.CANCELLED]),
                )
                .order_by(WorkOrder.opened_at.desc())
                .limit(limit)
            )
        ),
    )


def presence_series(detail: CabinetDetail, now: datetime) -> dict[str, Any]:
    """The last 24 h of presence as a step series for a chart: 1 online, 0 offline, at each transition
    (epoch seconds), from the window's start to now."""
    start = now - timedelta(hours=24)
    xs: list[float] = [start.timestamp()]
    if detail.online_before is not None:
        first = detail.online_before
    else:
        # Nothing known before the window: as the first transition left it, or as it is now.
        first = not detail.presence[0].online if detail.presence else detail.cabinet.online
    ys: list[int] = [int(bool(first))]
    for event in detail.presence:
        xs.append(event.at.timestamp())
        ys.append(int(event.online))
    xs.append(now.timestamp())
    ys.append(int(detail.cabinet.online))
    return {"x": xs, "series": [{"label": "online (1) / offline (0)", "values": ys}], "steps": True}
