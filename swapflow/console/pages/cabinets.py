"""A cabinet's page: its slots, its last 24 h online and offline, recent swaps, commands with their
acks, device messages, dead letters, open alerts and work orders. Another city's cabinet is not found."""

from __future__ import annotations

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse

from swapflow.api.deps import SessionDep, SettingsDep
from swapflow.console.pages.network import STATE_LABELS
from swapflow.console.rendering import render
from swapflow.console.session import ConsoleUser
from swapflow.domain.clock import utcnow
from swapflow.services import console_network

router = APIRouter()

CabinetId = Path(min_length=1, max_length=40)


@router.get("/cabinets/{cabinet_id}", response_class=HTMLResponse)
async def cabinet(
    request: Request, user: ConsoleUser, session: SessionDep, settings: SettingsDep, cabinet_id: str = CabinetId
) -> HTMLResponse:
    user.check_city(await console_network.cabinet_city(session, cabinet_id), "cabinet", cabinet_id)
    now = utcnow()
    detail = await console_network.cabinet_detail(session, settings, cabinet_id, now=now)
    context = {
        "section": "network",
        "detail": detail,
        "slots": detail.slots,
        "cabinet_id": cabinet_id,
        "labels": STATE_LABELS,
        "presence": console_network.presence_series(detail, now),
        "settings": settings,
    }
    return render(request, "cabinets/page.html", context, user=user)
