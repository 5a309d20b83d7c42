"""Network-wide figures and the dead letters operators must see."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from swapflow.api.auth import STAFF, Principal, require
from swapflow.api.deps import SessionDep, SettingsDep
from swapflow.api.schemas import DeadLetterView, NetworkStats
from swapflow.domain.swaps import SwapStatus
from swapflow.services import network

router = APIRouter(tags=["network"])


@router.get("/healthz", include_in_schema=False)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/v1/stats", response_model=NetworkStats)
async def stats(session: SessionDep) -> NetworkStats:
    """Swaps done / failed / in flight and cabinets online."""
    counts = await network.network_counts(session)
    return NetworkStats(
        swaps_completed=counts.swaps_by_status.get(SwapStatus.COMPLETED, 0),
        swaps_failed=counts.swaps_by_status.get(SwapStatus.FAILED, 0),
        swaps_in_flight=counts.swaps_by_status.get(SwapStatus.IN_PROGRESS, 0),
        cabinets_online=counts.cabinets_online,
        cabinets_total=counts.cabinets_total,
        dead_letters=counts.dead_letters,
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
    found = await network.dead_letters(
        session, topic_prefix=settings.mqtt.topic_prefix, cities=principal.visible_cities(city), limit=limit
    )
    return [
        DeadLetterView.model_validate(row).model_copy(update={"cabinet_id": cabinet_id, "city_code": city_code})
        for row, cabinet_id, city_code in found
    ]
