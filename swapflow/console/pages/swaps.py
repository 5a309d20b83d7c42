"""Swaps: a search (by id, rider, cabinet, status and time, in the operator's cities, paginated) and a
swap's page: its order, stages, door commands and its workflow's history from Temporal, kept up to date
over Server-Sent Events while the swap runs. Another city's swap is not found."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from swapflow.api.deps import DatabaseDep, SessionDep, SettingsDep, TemporalDep
from swapflow.console.live import changes, sse_event
from swapflow.console.rendering import fragment, render
from swapflow.console.session import ConsoleUser
from swapflow.domain.errors import Invalid
from swapflow.domain.swaps import SwapStatus
from swapflow.services import console_swaps
from swapflow.services.console_swaps import SwapQuery

router = APIRouter()

SwapId = Annotated[str, Path(min_length=1, max_length=40)]
Text = Annotated[str | None, Query(max_length=40)]


def _status(value: str | None) -> SwapStatus | None:
    """A status from the search form; an empty field is any status."""
    if not value:
        return None
    try:
        return SwapStatus(value)
    except ValueError:
        raise Invalid(f"status must be one of {', '.join(s.value for s in SwapStatus)}") from None


def _utc(value: str | None, field: str) -> datetime | None:
    """A time from the search form (UTC unless it names its zone); an empty field is no bound."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise Invalid(f"{field} must be a date and time, like 2026-12-07T09:30") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@router.get("/swaps", response_class=HTMLResponse)
async def search(
    request: Request,
    user: ConsoleUser,
    session: SessionDep,
    swap_id: Text = None,
    rider_id: Text = None,
    cabinet_id: Text = None,
    status: Annotated[str | None, Query(max_length=16)] = None,
    since: Annotated[str | None, Query(max_length=40)] = None,
    until: Annotated[str | None, Query(max_length=40)] = None,
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
) -> HTMLResponse:
    query = SwapQuery(
        swap_id=swap_id or None,
        rider_id=rider_id or None,
        cabinet_id=cabinet_id or None,
        status=_status(status),
        since=_utc(since, "from"),
        until=_utc(until, "to"),
    )
    found = await console_swaps.search_swaps(session, user.visible_cities(), query, page)
    asked = {
        "swap_id": swap_id,
        "rider_id": rider_id,
        "cabinet_id": cabinet_id,
        "status": query.status.value if query.status else None,
        "since": since,
        "until": until,
    }
    context = {
        "section": "swaps",
        "page": found,
        "q": query,
        "statuses": list(SwapStatus),
        "base_query": urlencode({k: v for k, v in asked.items() if v}),
    }
    return render(request, "swaps/search.html", context, user=user)


@router.get("/swaps/{swap_id}", response_class=HTMLResponse)
async def swap(
    request: Request,
    user: ConsoleUser,
    session: SessionDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    swap_id: SwapId,
) -> HTMLResponse:
    user.check_city(await console_swaps.swap_city(session, swap_id), "swap", swap_id)
    detail = await console_swaps.swap_detail(session, swap_id)
    history = await console_swaps.workflow_history(temporal, settings.temporal, detail.workflow_id, detail.command_rows)
    context = {"section": "swaps", "detail": detail, "history": history}
    return render(request, "swaps/page.html", context, user=user)


@router.get("/swaps/{swap_id}/live")
async def swap_live(
    request: Request,
    user: ConsoleUser,
    db: DatabaseDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    swap_id: SwapId,
) -> StreamingResponse:
    """The swap's stages and history, sent again whenever they change, until the swap ends (then an `end`
    event tells the page to stop listening)."""
    async with db.sessions() as session:
        user.check_city(await console_swaps.swap_city(session, swap_id), "swap", swap_id)
    ended = False

    async def current() -> str:
        nonlocal ended
        async with db.sessions() as session:
            detail = await console_swaps.swap_detail(session, swap_id)
        history = await console_swaps.workflow_history(
            temporal, settings.temporal, detail.workflow_id, detail.command_rows
        )
        ended = not detail.running and (history.timeline is None or history.timeline.closed_at is not None)
        return fragment("swaps/_live.html", {"detail": detail, "history": history})

    async def gone() -> bool:
        return ended or await request.is_disconnected()

    async def body() -> AsyncIterator[str]:
        async for chunk in changes(
            "swap", current, poll_s=settings.console.live_poll_s, max_s=settings.console.live_max_s, gone=gone
        ):
            yield chunk
        if ended:
            yield sse_event("end", "")

    return StreamingResponse(
        body(), media_type="text/event-stream", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
