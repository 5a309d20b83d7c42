"""The network as a whole: swaps by outcome, cabinets online, and the dead letters of device messages
that could not be parsed or routed; and a rider with the pack they hold."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.cities import topic_cabinet
from swapflow.db.devices import DeadLetter
from swapflow.db.network import Battery, Cabinet, Rider, Station
from swapflow.db.swaps import SwapOrder
from swapflow.domain.errors import NotFound
from swapflow.domain.network import CustodianKind
from swapflow.domain.swaps import SwapStatus


@dataclass(frozen=True)
class NetworkCounts:
    swaps_by_status: dict[SwapStatus, int]
    cabinets_online: int
    cabinets_total: int
    dead_letters: int


async def network_counts(session: AsyncSession) -> NetworkCounts:
    """Swaps by status, cabinets online of all, and dead letters kept."""
    by_status = dict(
        (await session.execute(select(SwapOrder.status, func.count()).group_by(SwapOrder.status))).tuples().all()
    )
    online, total = (
        await session.execute(select(func.count().filter(Cabinet.online.is_(True)), func.count()).select_from(Cabinet))
    ).one()
    return NetworkCounts(
        swaps_by_status=by_status,
        cabinets_online=online or 0,
        cabinets_total=total or 0,
        dead_letters=await session.scalar(select(func.count()).select_from(DeadLetter)) or 0,
    )


async def dead_letters(
    session: AsyncSession, *, topic_prefix: str, cities: list[str] | None, limit: int
) -> list[tuple[DeadLetter, str | None, str | None]]:
    """Dead letters, newest first, with the cabinet and city their topic names (None: no known cabinet):
    those of `cities`' cabinets, or all (None)."""
    query = (
        select(DeadLetter, Cabinet.id, Station.city_code)
        .outerjoin(Cabinet, Cabinet.id == topic_cabinet(DeadLetter.topic, topic_prefix))
        .outerjoin(Station, Station.id == Cabinet.station_id)
        .order_by(DeadLetter.id.desc())
        .limit(limit)
    )
    if cities is not None:
        query = query.where(Station.city_code.in_(cities))
    return list((await session.execute(query)).tuples())


async def find_rider(session: AsyncSession, rider_id: str) -> Rider:
    """The rider, or NotFound."""
    rider = await session.get(Rider, rider_id)
    if rider is None:
        raise NotFound("rider", rider_id)
    return rider


async def rider_battery(session: AsyncSession, rider_id: str) -> Battery | None:
    """The pack in the rider's hands, if any."""
    return await session.scalar(
        select(Battery).where(Battery.custodian_kind == CustodianKind.RIDER, Battery.custodian_ref == rider_id)
    )
