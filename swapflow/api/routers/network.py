"""Network-wide figures and the dead letters operators must see."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from sqlalchemy import func, select

from swapflow.api.auth import STAFF, require
from swapflow.api.deps import SessionDep
from swapflow.api.schemas import DeadLetterView, NetworkStats
from swapflow.db.models import Cabinet, DeadLetter, SwapOrder, SwapStatus

router = APIRouter(tags=["network"])


@router.get("/healthz", include_in_schema=False)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/v1/stats", response_model=NetworkStats)
async def stats(session: SessionDep) -> NetworkStats:
    """Swaps done / failed / in flight and cabinets online."""
    by_status = dict((await session.execute(
        select(SwapOrder.status, func.count()).group_by(SwapOrder.status))).tuples().all())
    online, total = (await session.execute(
        select(func.count().filter(Cabinet.online.is_(True)), func.count()).select_from(Cabinet))).one()
    return NetworkStats(
        swaps_completed=by_status.get(SwapStatus.COMPLETED, 0), swaps_failed=by_status.get(SwapStatus.FAILED, 0),
        swaps_in_flight=by_status.get(SwapStatus.IN_PROGRESS, 0), cabinets_online=online or 0,
        cabinets_total=total or 0,
        dead_letters=await session.scalar(select(func.count()).select_from(DeadLetter)) or 0,
    )


@router.get("/v1/dead-letters", response_model=list[DeadLetterView], dependencies=[Depends(require(*STAFF))])
async def dead_letters(session: SessionDep,
                       limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[DeadLetterView]:
    """Device messages that could not be parsed or routed, newest first, with the reason."""
    rows = await session.scalars(select(DeadLetter).order_by(DeadLetter.id.desc()).limit(limit))
    return [DeadLetterView.model_validate(row) for row in rows]
