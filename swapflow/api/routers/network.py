"""Network-wide figures and the dead letters operators must see."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from sqlalchemy import func, select

from swapflow.api.auth import STAFF, Principal, require
from swapflow.api.deps import SessionDep, SettingsDep
from swapflow.api.schemas import DeadLetterView, NetworkStats
from swapflow.db.cities import topic_cabinet
from swapflow.db.devices import DeadLetter
from swapflow.db.network import Cabinet, Station
from swapflow.db.swaps import SwapOrder
from swapflow.domain.swaps import SwapStatus

router = APIRouter(tags=["network"])


@router.get("/healthz", include_in_schema=False)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/v1/stats", response_model=NetworkStats)
async def stats(session: SessionDep) -> NetworkStats:
    """Swaps done / failed / in flight and cabinets online."""
    by_status = dict(
        (await session.execute(select(SwapOrder.status, func.count()).group_by(SwapOrder.status))).tuples().all()
    )
    online, total = (
        await session.execute(select(func.count().filter(Cabinet.online.is_(True)), func.count()).select_from(Cabinet))
    ).one()
    return NetworkStats(
        swaps_completed=by_status.get(SwapStatus.COMPLETED, 0),
        swaps_failed=by_status.get(SwapStatus.FAILED, 0),
        swaps_in_flight=by_status.get(SwapStatus.IN_PROGRESS, 0),
        cabinets_online=online or 0,
        cabinets_total=total or 0,
        dead_letters=await session.scalar(select(func.count()).select_from(DeadLetter)) or 0,
    )


@router.get("/v1/dead-letters", response_model=list[DeadLetterView])
async def dead_letters(
    session: SessionDep,
    settings: SettingsDep,
    principal: Annotated[Principal, Depends(require(*STAFF))],
    city: Annotated[str | None, Query(max_length=16)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DeadLetterView]:
    """Device messages that could not be parsed or routed, newest first, with the reason: those of the
    caller's cities' cabinets (of devices that are no known cabinet too, for admins)."""
    cities = principal.visible_cities(city)
    query = (
        select(DeadLetter, Cabinet.id, Station.city_code)
        .outerjoin(Cabinet, Cabinet.id == topic_cabinet(DeadLetter.topic, settings.mqtt_topic_prefix))
        .outerjoin(Station, Station.id == Cabinet.station_id)
        .order_by(DeadLetter.id.desc())
        .limit(limit)
    )
    if cities is not None:
        query = query.where(Station.city_code.in_(cities))
    return [
        DeadLetterView.model_validate(row).model_copy(update={"cabinet_id": cabinet_id, "city_code": city_code})
        for row, cabinet_id, city_code in (await session.execute(query)).tuples()
    ]
