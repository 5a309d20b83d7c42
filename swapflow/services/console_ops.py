"""What the console's ops pages read: alerts and work orders a page at a time with their filters, and
the incident figures day by day (MTTA and MTTR from work orders' timelines, uptime from the recorded
online/offline transitions) for the charts. Days are UTC days."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.network import Cabinet, CabinetPresence, Station
from swapflow.db.ops import Alert, Technician, WorkOrder, WorkOrderEvent
from swapflow.domain.clock import as_utc, utcnow
from swapflow.domain.errors import NotFound
from swapflow.domain.network import CabinetCapability
from swapflow.domain.ops import OPEN_WORK_ORDER_STATUSES, AlertStatus, WorkOrderStatus

DAY = timedelta(days=1)


class AlertFilter(StrEnum):
    """Which alerts a listing shows: `open` ones (acknowledged or not), open ones nobody acknowledged
    yet, open acknowledged ones, resolved ones, or all."""

    OPEN = "open"
    UNACKNOWLEDGED = "unacknowledged"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    ALL = "all"


@dataclass(frozen=True)
class AlertRow:
    alert: Alert
    city_code: str | None
    """None: a network-wide alert (no cabinet), which only admins see."""


@dataclass(frozen=True)
class AlertPage:
    rows: list[AlertRow]
    next_cursor: int | None
    """The last alert shown when there are more (the next page starts below it); None: this was the last."""


async def alert_page(
    session: AsyncSession,
    *,
    cities: list[str] | None,
    status: AlertFilter = AlertFilter.OPEN,
    kind: str | None = None,
    severity: str | None = None,
    cursor: int | None = None,
    limit: int = 50,
) -> AlertPage:
    """Alerts of `cities` (None: all, network-wide ones too), newest first, at most `limit`, after the
    alert `cursor` of the previous page."""
    query = (
        select(Alert, Station.city_code)
        .outerjoin(Cabinet, Cabinet.id == Alert.cabinet_id)
        .outerjoin(Station, Station.id == Cabinet.station_id)
        .order_by(Alert.id.desc())
        .limit(limit + 1)
    )
    if cities is not None:
        query = query.where(Station.city_code.in_(cities))
    if status == AlertFilter.RESOLVED:
        query = query.where(Alert.status == AlertStatus.RESOLVED)
    elif status != AlertFilter.ALL:
        query = query.where(Alert.status == AlertStatus.OPEN)
        if status == AlertFilter.UNACKNOWLEDGED:
            query = query.where(Alert.acknowledged_at.is_(None))
        elif status == AlertFilter.ACKNOWLEDGED:
            query = query.where(Alert.acknowledged_at.is_not(None))
    if kind:
        query = query.where(Alert.kind == kind)
    if severity:
        query = query.where(Alert.severity == severity)
    if cursor is not None:
        query = query.where(Alert.id < cursor)
    found = [AlertRow(alert, city) for alert, city in (await session.execute(query)).tuples()]
    more = len(found) > limit
    return AlertPage(found[:limit], found[limit - 1].alert.id if more else None)


async def alert_kinds(session: AsyncSession) -> list[str]:
    """The kinds of alerts there are (for a listing's filter)."""
    return list(await session.scalars(select(Alert.kind).distinct().order_by(Alert.kind)))


class WorkOrderFilter(StrEnum):
    OPEN = "open"
    CLOSED = WorkOrderStatus.CLOSED.value
    CANCELLED = WorkOrderStatus.CANCELLED.value
    ALL = "all"


@dataclass(frozen=True)
class WorkOrderPage:
    orders: list[WorkOrder]
    next_cursor: str | None
    """The last work order shown when there are more; None: this was the last."""


async def work_order_page(
    session: AsyncSession,
    *,
    cities: list[str] | None,
    status: WorkOrderFilter = WorkOrderFilter.OPEN,
    technician_id: str | None = None,
    severity: str | None = None,
    cabinet_id: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> WorkOrderPage:
    """Work orders of `cities` (None: all), latest opened first (then by id), at most `limit`, after the
    work order `cursor` of the previous page: NotFound if it names none."""
    query = select(WorkOrder).order_by(WorkOrder.opened_at.desc(), WorkOrder.id.desc()).limit(limit + 1)
    if cities is not None:
        query = query.where(WorkOrder.city_code.in_(cities))
    if status == WorkOrderFilter.OPEN:
        query = query.where(WorkOrder.status.in_(OPEN_WORK_ORDER_STATUSES))
    elif status != WorkOrderFilter.ALL:
        query = query.where(WorkOrder.status == status.value)
    if technician_id:
        query = query.where(WorkOrder.technician_id == technician_id)
    if severity:
        query = query.where(WorkOrder.severity == severity)
    if cabinet_id:
        query = query.where(WorkOrder.cabinet_id == cabinet_id)
    if cursor is not None:
        last = await session.get(WorkOrder, cursor)
        if last is None:
            raise NotFound("work order", cursor)
        query = query.where(
            or_(
                WorkOrder.opened_at < last.opened_at,
                and_(WorkOrder.opened_at == last.opened_at, WorkOrder.id < last.id),
            )
        )
    found = list(await session.scalars(query))
    more = len(found) > limit
    return WorkOrderPage(found[:limit], found[limit - 1].id if more else None)


# ---------------------------------------------------------------------------------- figures over time


def day_starts(days: int, now: datetime | None = None) -> list[datetime]:
    """The starts of the last `days` UTC days, today's last."""
    today = as_utc(now or utcnow()).replace(hour=0, minute=0, second=0, microsecond=0)
    return [today - DAY * n for n in range(days - 1, -1, -1)]


@dataclass(frozen=True)
class CitySeries:
    """One value per day (None: nothing to say that day) for one city."""

    city_code: str
    values: list[float | None]


@dataclass(frozen=True)
class IncidentSeries:
    """MTTA and MTTR (seconds) per city and day, of the work orders opened that day, as of now."""

    days: list[datetime]
    mtta_s: list[CitySeries]
    mttr_s: list[CitySeries]
    opened: dict[str, int]
    """Work orders opened over all the days, per city."""


async def incident_series(session: AsyncSession, days: list[datetime], cities: Sequence[str] | None) -> IncidentSeries:
    """Each day's MTTA and MTTR per city, as `ops.figures.incident_figures` counts them over the orders
    opened that day (from opening to the first `accepted` and to the `closed` step), in one query."""
    if not days:
        return IncidentSeries(days=days, mtta_s=[], mttr_s=[], opened={})
    query = (
        select(WorkOrder.id, WorkOrder.city_code, WorkOrder.opened_at, WorkOrderEvent.kind, WorkOrderEvent.at)
        .outerjoin(
            WorkOrderEvent,
            (WorkOrderEvent.work_order_id == WorkOrder.id) & WorkOrderEvent.kind.in_(("accepted", "closed")),
        )
        .where(WorkOrder.opened_at >= days[0], WorkOrder.opened_at < days[-1] + DAY)
        .order_by(WorkOrder.id, WorkOrderEvent.seq)
    )
    if cities is not None:
        query = query.where(WorkOrder.city_code.in_(list(cities)))
    steps: dict[str, dict[str, datetime]] = defaultdict(dict)
    city_of: dict[str, str] = {}
    for order_id, city_code, opened_at, kind, at in (await session.execute(query)).tuples():
        steps[order_id].setdefault("opened", as_utc(opened_at))
        if kind is not None:
            steps[order_id].setdefault(kind, as_utc(at))  # the first of each: a reassigned order's first ack
        city_of[order_id] = city_code
    opened: dict[str, int] = defaultdict(int)
    acks: dict[tuple[str, int], list[float]] = defaultdict(list)
    repairs: dict[tuple[str, int], list[float]] = defaultdict(list)
    for order_id, found in steps.items():
        city, index = city_of[order_id], int((found["opened"] - days[0]) / DAY)
        opened[city] += 1
        if "accepted" in found:
            acks[city, index].append((found["accepted"] - found["opened"]).total_seconds())
        if "closed" in found:
            repairs[city, index].append((found["closed"] - found["opened"]).total_seconds())

    def means(durations: dict[tuple[str, int], list[float]], city: str) -> list[float | None]:
        found = (durations.get((city, index)) for index in range(len(days)))
        return [round(sum(values) / len(values), 3) if values else None for values in found]

    return IncidentSeries(
        days=days,
        mtta_s=[CitySeries(city, means(acks, city)) for city in sorted(opened)],
        mttr_s=[CitySeries(city, means(repairs, city)) for city in sorted(opened)],
        opened=dict(sorted(opened.items())),
    )


def daily_presence(
    transitions: Sequence[tuple[datetime, bool]], days: Sequence[datetime], end: datetime
) -> list[tuple[float, float]]:
    """(observed seconds, online seconds) of one cabinet on each day of `days` (consecutive UTC days,
    the last one cut at `end`), from its transitions in order: time before its first transition is not
    observed, as `ops.uptime` counts it."""
    spans = [[0.0, 0.0] for _ in days]
    if not days:
        return []
    first = days[0]

    def add(start: datetime, stop: datetime, online: bool) -> None:
        start, stop = max(start, first), min(stop, end)
        while start < stop:
            index = int((start - first) / DAY)
            day_end = min(first + DAY * (index + 1), stop)
            seconds = (day_end - start).total_seconds()
            spans[index][0] += seconds
            if online:
                spans[index][1] += seconds
            start = day_end

    state: bool | None = None
    since = first
    for at, online in transitions:
        if state is not None:
            add(since, at, state)
        state, since = online, at
    if state is not None:
        add(since, end, state)
    return [(observed, online) for observed, online in spans]


async def uptime_series(session: AsyncSession, days: list[datetime], cities: Sequence[str] | None) -> list[CitySeries]:
    """Each day's uptime (online share of the observed time, 0 to 1) per city, over its reporting
    cabinets (command-only ones never report), from their recorded transitions."""
    if not days:
        return []
    end = min(days[-1] + DAY, utcnow())
    query = (
        select(Cabinet.id, Station.city_code)
        .join(Station, Station.id == Cabinet.station_id)
        .where(Cabinet.capability == CabinetCapability.REPORTING)
    )
    if cities is not None:
        query = query.where(Station.city_code.in_(list(cities)))
    city_of = dict((await session.execute(query)).tuples().all())
    scoped = select(Cabinet.id).join(Station, Station.id == Cabinet.station_id)
    if cities is not None:
        scoped = scoped.where(Station.city_code.in_(list(cities)))
    first = days[0]
    # Each cabinet's state as the first day starts (its last transition before), then the days' own.
    latest = (
        select(CabinetPresence.cabinet_id, func.max(CabinetPresence.at).label("at"))
        .where(CabinetPresence.at < first, CabinetPresence.cabinet_id.in_(scoped))
        .group_by(CabinetPresence.cabinet_id)
        .subquery()
    )
    before = select(CabinetPresence.cabinet_id, CabinetPresence.at, CabinetPresence.online).join(
        latest, and_(latest.c.cabinet_id == CabinetPresence.cabinet_id, latest.c.at == CabinetPresence.at)
    )
    during = select(CabinetPresence.cabinet_id, CabinetPresence.at, CabinetPresence.online).where(
        CabinetPresence.at >= first, CabinetPresence.at < end, CabinetPresence.cabinet_id.in_(scoped)
    )
    transitions: dict[str, list[tuple[datetime, bool]]] = defaultdict(list)
    for cabinet_id, at, online in (await session.execute(before.order_by(CabinetPresence.id))).tuples():
        transitions[cabinet_id][:] = [(as_utc(at), online)]  # the last of a tie
    for cabinet_id, at, online in (
        await session.execute(during.order_by(CabinetPresence.cabinet_id, CabinetPresence.at, CabinetPresence.id))
    ).tuples():
        transitions[cabinet_id].append((as_utc(at), online))
    totals: dict[str, list[list[float]]] = {}
    for cabinet_id, city_code in city_of.items():
        sums = totals.setdefault(city_code, [[0.0, 0.0] for _ in days])
        for index, (observed_s, online_s) in enumerate(daily_presence(transitions.get(cabinet_id, []), days, end)):
            sums[index][0] += observed_s
            sums[index][1] += online_s
    return [
        CitySeries(city, [None if seen <= 0 else round(up / seen, 6) for seen, up in sums])
        for city, sums in sorted(totals.items())
    ]


def epoch_seconds(days: Sequence[datetime]) -> list[int]:
    """The days as Unix seconds, as a chart's x values."""
    return [int(day.astimezone(UTC).timestamp()) for day in days]


async def work_orders_of_alert(session: AsyncSession, alert_id: int) -> list[WorkOrder]:
    """The work orders an alert opened, oldest first."""
    return list(
        await session.scalars(select(WorkOrder).where(WorkOrder.alert_id == alert_id).order_by(WorkOrder.opened_at))
    )


async def technicians_of(session: AsyncSession, city_code: str) -> list[str]:
    """The technicians of a city (a work order's reassignment choices)."""
    return list(
        await session.scalars(
            select(Technician.operator_id).where(Technician.city_code == city_code).order_by(Technician.operator_id)
        )
    )
