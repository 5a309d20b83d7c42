"""A battery pack's page: its SoC, SoH, voltage and temperature as charts, its custody trail and its
safety checks. Scoped by the city the pack is in: another city's pack (or, for an operator with a city
scope, one in a depot) is not found."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse

from swapflow.api.deps import SessionDep
from swapflow.console.rendering import render
from swapflow.console.session import ConsoleUser
from swapflow.services import console_batteries

router = APIRouter()


@router.get("/batteries/{serial}", response_class=HTMLResponse)
async def battery(
    request: Request,
    user: ConsoleUser,
    session: SessionDep,
    serial: Annotated[str, Path(min_length=1, max_length=40)],
) -> HTMLResponse:
    pack, city = await console_batteries.battery_scope(session, serial)
    if user.cities is not None:
        user.check_city(city or "", "battery", serial)
    detail = await console_batteries.battery_detail(session, pack, city)
    return render(request, "batteries/page.html", {"section": "network", "detail": detail}, user=user)
