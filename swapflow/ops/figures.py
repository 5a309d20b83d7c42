"""Incident figures from what was recorded: MTTA and MTTR from work orders' timelines, open alerts and
work orders by age. Uptime is `swapflow.ops.uptime`."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.network import Cabinet, Station
from swapflow.db.ops import Alert, WorkOrder, WorkOrderEvent
from swapflow.domain.clock import as_utc
from swapflow.domain.ops import OPEN_WORK_ORDER_STATUSES, AlertStatus
from swapflow.ops.uptime import Period

AGE_BUCKETS_S = ((15 * 60, "<15m"), (3600, "15m-1h"), (4 * 3600, "1h-4h"), (24 * 3600, "4h-24h"))
"""Upper bounds of the age buckets; older falls into '>24h'."""


@dataclass(frozen=True)
class IncidentFigures:
    """Work orders of one city opened in the period: MTTA (opened → first accepted) over those acked,
    MTTR (opened → verified closed) over those closed, both as of the period's end."""

    city_code: str
    opened: int
    acked: int
    closed: int
    mtta_s: float | None
    mttr_s: float | None


def _mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None


async def incident_figures(
    session: AsyncSession, period: Period, cities: Sequence[str] | None = None
) -> list[IncidentFigures]:
    """MTTA and MTTR per city of the work orders opened in `period`: from the moment each was opened
    to the first `accepted` and the `closed` step of its timeline."""
    query = (
        select(WorkOrder.id, WorkOrder.city_code, WorkOrder.opened_at, WorkOrderEvent.kind, WorkOrderEvent.at)
        .outerjoin(
            WorkOrderEvent,
            (WorkOrderEvent.work_order_id == WorkOrder.id) & WorkOrderEvent.kind.in_(("accepted", "closed")),
        )
        .where(WorkOrder.opened_at >= period.start, WorkOrder.opened_at < period.end)
        .order_by(WorkOrder.id, WorkOrderEvent.seq)
    )
    if cities is not None:
        query = query.where(WorkOrder.city_code.in_(list(cities)))
    steps: dict[str, dict[str, datetime]] = defaultdict(dict)
    city_of: dict[str, str] = {}
    for order_id, city_code, opened_at, kind, at in (await session.execute(query)).tuples():
        steps[order_id].setdefault("opened", as_utc(opened_at))
        if kind is not None and as_utc(at) < period.end:  # as of the period's end
            steps[order_id].setdefault(kind, as_utc(at))  # the first of each: a reassigned order's first ack counts
        city_of[order_id] = city_code
    by_city: dict[str, list[dict[str, datetime]]] = defaultdict(list)
    for order_id, found in steps.items():
        by_city[city_of[order_id]].append(found)
    figures = []
    for city_code, orders in sorted(by_city.items()):
        acks = [(o["accepted"] - o["opened"]).total_seconds() for o in orders if "accepted" in o]
        repairs = [(o["closed"] - o["opened"]).total_seconds() for o in orders if "closed" in o]
        figures.append(
            IncidentFigures(
                city_code=city_code,
                opened=len(orders),
                acked=len(acks),
                closed=len(repairs),
                mtta_s=_mean(acks),
                mttr_s=_mean(repairs),
            )
        )
    return figures


def age_bucket(age_s: float) -> str:
    return next((label for bound, label in AGE_BUCKETS_S if age_s < bound), ">24h")


async def open_by_age(
    session: AsyncSession, now: datetime, cities: Sequence[str] | None = None
) -> dict[str, dict[str, int]]:
    """Open alerts and open work orders counted by age bucket."""
    alerts = (
        select(Alert.created_at)
        .outerjoin(Cabinet, Cabinet.id == Alert.cabinet_id)
        .outerjoin(Station, Station.id == Cabinet.station_id)
        .where(Alert.status == AlertStatus.OPEN)
    )
    orders = select(WorkOrder.opened_at).where(WorkOrder.status.in_(OPEN_WORK_ORDER_STATUSES))
    if cities is not None:
        alerts = alerts.where(Station.city_code.in_(list(cities)))
        orders = orders.where(WorkOrder.city_code.in_(list(cities)))
    result: dict[str, dict[str, int]] = {}
    for name, query in (("alerts", alerts), ("work_orders", orders)):
        counts = {label: 0 for _, label in AGE_BUCKETS_S} | {">24h": 0}
        for at in await session.scalars(query):
            counts[age_bucket((now - as_utc(at)).total_seconds())] += 1
        result[name] = counts
    return result
