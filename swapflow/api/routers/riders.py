"""Rider endpoints: who they are and the battery they hold."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from sqlalchemy import select

from swapflow.api.auth import STAFF, Principal, require
from swapflow.api.deps import SessionDep
from swapflow.api.problems import Problem
from swapflow.api.schemas import BatteryView, RiderView
from swapflow.db.network import Battery, Rider
from swapflow.domain.network import CustodianKind

router = APIRouter(prefix="/v1/riders", tags=["riders"])


@router.get("/{rider_id}", response_model=RiderView)
async def get_rider(
    rider_id: str, session: SessionDep, principal: Annotated[Principal, Depends(require(*STAFF, riders=True))]
) -> RiderView:
    """A rider and the pack in their hands (SoC, SoH, …): for the rider, and operators of their city."""
    rider = await session.get(Rider, rider_id)
    if rider is None or (principal.is_rider and rider.id != principal.id):
        raise Problem(404, "Unknown rider", f"no rider {rider_id!r}")
    principal.check_city(rider.city_code, "rider", rider_id)
    battery = await session.scalar(
        select(Battery).where(Battery.custodian_kind == CustodianKind.RIDER, Battery.custodian_ref == rider_id)
    )
    return RiderView(
        id=rider.id,
        name=rider.name,
        city_code=rider.city_code,
        status=rider.status,
        battery=BatteryView.model_validate(battery) if battery else None,
    )
