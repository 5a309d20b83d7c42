"""Uptime of cabinets, stations and cities over any period, computed from the recorded online/offline
transitions (`cabinet_presence`). A cabinet's state at the start of the period is its last transition
before it; a cabinet with none is offline (never heard). Command-only cabinets never report, so they
have no uptime and are left out."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel
from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.models import Cabinet, CabinetCapability, CabinetPresence, Station, as_utc


class UptimeLevel(StrEnum):
    CABINET = "cabinet"
    STATION = "station"
    CITY = "city"


class Uptime(BaseModel):
    """Online time of one cabinet, or the sum over a station's or a city's cabinets."""

    key: str
    cabinets: int
    period_s: float
    """The period's length times the number of cabinets."""
    online_s: float

    @property
    def ratio(self) -> float:
        """Share of the period online, 0..1."""
        return self.online_s / self.period_s if self.period_s else 0.0


def online_seconds(
    initial: bool, transitions: Iterable[tuple[datetime, bool]], start: datetime, end: datetime
) -> float:
    """Seconds online within [start, end), from the state at `start` and the (at, online) transitions
    after it, in time order. Repeats of the current state change nothing."""
    start, end = as_utc(start), as_utc(end)
    online, since, total = initial, start, 0.0
    for at, now_online in transitions:
        at = min(max(as_utc(at), start), end)
        if online and not now_online:
            total += (at - since).total_seconds()
        if now_online and not online:
            since = at
        online = now_online
    if online:
        total += (end - since).total_seconds()
    return total


async def uptime(
    session: AsyncSession,
    start: datetime,
    end: datetime,
    *,
    level: UptimeLevel = UptimeLevel.CABINET,
    city_code: str | None = None,
    station_id: str | None = None,
    cabinet_ids: Iterable[str] | None = None,
) -> list[Uptime]:
    """Uptime in [start, end) per cabinet, station or city (`level`), of the reporting cabinets chosen
    by the filters (all when none is given), sorted by key."""
    start, end = as_utc(start), as_utc(end)
    chosen = (
        select(Cabinet.id, Cabinet.station_id, Station.city_code)
        .join(Station)
        .where(Cabinet.capability == CabinetCapability.REPORTING)
    )
    if city_code is not None:
        chosen = chosen.where(Station.city_code == city_code)
    if station_id is not None:
        chosen = chosen.where(Cabinet.station_id == station_id)
    if cabinet_ids is not None:
        chosen = chosen.where(Cabinet.id.in_(list(cabinet_ids)))
    cabinets = {row.id: row for row in await session.execute(chosen)}
    if not cabinets:
        return []
    ids = list(cabinets)

    last_before = (
        select(CabinetPresence.cabinet_id, func.max(CabinetPresence.at).label("at"))
        .where(CabinetPresence.cabinet_id.in_(ids), CabinetPresence.at <= start)
        .group_by(CabinetPresence.cabinet_id)
        .subquery()
    )
    initial = dict(
        (
            await session.execute(
                select(CabinetPresence.cabinet_id, CabinetPresence.online)
                .join(
                    last_before,
                    and_(
                        CabinetPresence.cabinet_id == last_before.c.cabinet_id, CabinetPresence.at == last_before.c.at
                    ),
                )
                .order_by(CabinetPresence.id)
            )
        )
        .tuples()
        .all()
    )
    during: dict[str, list[tuple[datetime, bool]]] = defaultdict(list)
    for cabinet_id, at, online in await session.execute(
        select(CabinetPresence.cabinet_id, CabinetPresence.at, CabinetPresence.online)
        .where(CabinetPresence.cabinet_id.in_(ids), CabinetPresence.at > start, CabinetPresence.at < end)
        .order_by(CabinetPresence.cabinet_id, CabinetPresence.at, CabinetPresence.id)
    ):
        during[cabinet_id].append((at, online))

    period = (end - start).total_seconds()
    totals: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for cabinet_id, row in cabinets.items():
        key = {UptimeLevel.CABINET: cabinet_id, UptimeLevel.STATION: row.station_id, UptimeLevel.CITY: row.city_code}[
            level
        ]
        total = totals[key]
        total[0] += 1
        total[1] += period
        total[2] += online_seconds(initial.get(cabinet_id, False), during[cabinet_id], start, end)
    return [Uptime(key=key, cabinets=int(n), period_s=p, online_s=o) for key, (n, p, o) in sorted(totals.items())]
