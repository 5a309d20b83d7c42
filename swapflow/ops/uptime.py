"""Cabinet uptime, computed from recorded online/offline transitions (never estimated).

The transitions live in `cabinet_presence`, written by the device adapter the moment it sees a cabinet
come online or go offline (swapflow/device_adapter/presence.py). This module reports them as the ops API
shows them: time before a cabinet's first recorded transition counts as not observed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.network import Cabinet, CabinetPresence, Station
from swapflow.domain.clock import as_utc, utcnow
from swapflow.domain.network import CabinetCapability


class UptimeScope(StrEnum):
    CABINET = "cabinet"
    STATION = "station"
    CITY = "city"


@dataclass(frozen=True)
class Period:
    """A half-open interval [start, end)."""

    start: datetime
    end: datetime


@dataclass(frozen=True)
class Uptime:
    """Seconds observed (from the first known state in the period) and seconds online in them."""

    scope: UptimeScope
    key: str
    city_code: str
    observed_s: float
    online_s: float
    transitions: int

    @property
    def ratio(self) -> float | None:
        """Online share of the observed time; None when nothing was observed."""
        return None if self.observed_s <= 0 else self.online_s / self.observed_s


async def _transitions(
    session: AsyncSession, cabinet_ids: Sequence[str], before: datetime
) -> dict[str, list[tuple[datetime, bool]]]:
    rows = await session.execute(
        select(CabinetPresence.cabinet_id, CabinetPresence.at, CabinetPresence.online)
        .where(CabinetPresence.cabinet_id.in_(list(cabinet_ids)), CabinetPresence.at < before)
        .order_by(CabinetPresence.cabinet_id, CabinetPresence.at, CabinetPresence.id)
    )
    found: dict[str, list[tuple[datetime, bool]]] = defaultdict(list)
    for cabinet_id, at, online in rows.tuples():
        found[cabinet_id].append((as_utc(at), online))
    return found


def cabinet_uptime(transitions: Sequence[tuple[datetime, bool]], period: Period) -> tuple[float, float, int]:
    """(observed seconds, online seconds, transitions in the period) of one cabinet. Time before its
    first recorded transition is not observed: its state then is unknown."""
    observed = online_s = 0.0
    state: bool | None = None
    since = period.start
    count = 0
    for at, online in transitions:
        if at <= period.start:
            state = online
            continue
        if state is not None:
            span = (at - since).total_seconds()
            observed += span
            online_s += span if state else 0.0
        state, since = online, at
        count += 1
    if state is not None and period.end > since:
        span = (period.end - since).total_seconds()
        observed += span
        online_s += span if state else 0.0
    return observed, online_s, count


async def uptime(
    session: AsyncSession,
    scope: UptimeScope,
    period: Period,
    *,
    cities: Sequence[str] | None = None,
    key: str | None = None,
) -> list[Uptime]:
    """Uptime of each cabinet, station or city (of `cities` when given; only `key` when given) over
    `period` (its end capped at now). Command-only cabinets never report, so they are left out."""
    period = Period(period.start, min(period.end, utcnow()))
    query = (
        select(Cabinet.id, Station.id, Station.city_code)
        .join(Station, Station.id == Cabinet.station_id)
        .where(Cabinet.capability == CabinetCapability.REPORTING)
    )
    if cities is not None:
        query = query.where(Station.city_code.in_(list(cities)))
    cabinets = (await session.execute(query)).tuples().all()
    transitions = await _transitions(session, [c for c, _, _ in cabinets], period.end)
    totals: dict[str, list[float]] = {}
    city_of: dict[str, str] = {}
    for cabinet_id, station_id, city_code in cabinets:
        group = {UptimeScope.CABINET: cabinet_id, UptimeScope.STATION: station_id, UptimeScope.CITY: city_code}[scope]
        if key is not None and group != key:
            continue
        observed, online_s, count = cabinet_uptime(transitions.get(cabinet_id, []), period)
        sums = totals.setdefault(group, [0.0, 0.0, 0])
        sums[0] += observed
        sums[1] += online_s
        sums[2] += count
        city_of[group] = city_code
    return [
        Uptime(
            scope=scope,
            key=group,
            city_code=city_of[group],
            observed_s=round(o, 3),
            online_s=round(s, 3),
            transitions=int(n),
        )
        for group, (o, s, n) in sorted(totals.items())
    ]
