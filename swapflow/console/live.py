"""Live pages over Server-Sent Events: the network page's counts and a cabinet's slots.

Each connected page gets its own stream. The server reads the values again every `console.live_poll_s`
(a short database session each time, none held between), renders the fragment, and sends it when it
changed (htmx's sse extension swaps it in). A stream ends when the browser goes, after
`console.live_max_s` (the browser reconnects), and at most `console.live_max_streams` run at once.
`event_stream` serves the riders' phone page's live swap too, from a pool and bounds of its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import StreamingResponse

from swapflow.api.deps import DatabaseDep, SettingsDep
from swapflow.console.pages.network import counts_context
from swapflow.console.rendering import fragment
from swapflow.console.session import ConsoleUser
from swapflow.db.engine import Database
from swapflow.domain.errors import Unavailable
from swapflow.services import console_network
from swapflow.settings import Settings

router = APIRouter(prefix="/live")

Render = Callable[[], Awaitable[str]]


class StreamPool:
    """How many live streams of one site (the console's, the riders' pages) run in this process."""

    def __init__(self) -> None:
        self.running = 0


CONSOLE_STREAMS = StreamPool()


def sse_event(event: str, html: str) -> str:
    """One Server-Sent Event carrying `html` (one data line per line of it)."""
    data = "\n".join(f"data: {line}" for line in html.splitlines() or [""])
    return f"event: {event}\n{data}\n\n"


async def changes(
    event: str,
    render: Render,
    *,
    poll_s: float,
    max_s: float,
    gone: Callable[[], Awaitable[bool]],
) -> AsyncIterator[str]:
    """`render`'s output as `event`s: at once, then each time it changes, until `gone` or `max_s`."""
    last: str | None = None
    ends = time.monotonic() + max_s
    while time.monotonic() < ends and not await gone():
        html = await render()
        if html != last:
            last = html
            yield sse_event(event, html)
        else:
            yield ": still here\n\n"  # a comment: lets a proxy and the server notice a closed connection
        await asyncio.sleep(poll_s)


def event_stream(
    request: Request,
    event: str,
    render: Render,
    *,
    pool: StreamPool,
    max_streams: int,
    poll_s: float,
    max_s: float,
    ended: Callable[[], bool] | None = None,
) -> StreamingResponse:
    """A live stream of `render`'s changes as `event`s (503 when `pool` already runs `max_streams`). With
    `ended`, the stream stops once it says so after a render, closing with an `end` event (the page's
    `sse-close="end"` stops listening)."""
    if pool.running >= max_streams:
        raise Unavailable("Too many live pages", "too many live pages are open; this page will try again")

    async def gone() -> bool:
        return (ended is not None and ended()) or await request.is_disconnected()

    async def body() -> AsyncIterator[str]:
        pool.running += 1
        try:
            async for chunk in changes(event, render, poll_s=poll_s, max_s=max_s, gone=gone):
                yield chunk
            if ended is not None and ended():
                yield sse_event("end", "")
        finally:
            pool.running -= 1

    return StreamingResponse(
        body(), media_type="text/event-stream", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )


def _stream(request: Request, settings: Settings, event: str, render: Render) -> StreamingResponse:
    return event_stream(
        request,
        event,
        render,
        pool=CONSOLE_STREAMS,
        max_streams=settings.console.live_max_streams,
        poll_s=settings.console.live_poll_s,
        max_s=settings.console.live_max_s,
    )


def network_counts(db: Database, settings: Settings, city: str) -> Render:
    async def render() -> str:
        async with db.sessions() as session:
            counts = await console_network.state_counts(session, settings, city)
        return fragment("network/_counts.html", counts_context(city, counts))

    return render


def cabinet_slots(db: Database, cabinet_id: str) -> Render:
    async def render() -> str:
        async with db.sessions() as session:
            slots = await console_network.cabinet_slots(session, cabinet_id)
        return fragment("cabinets/_slots.html", {"slots": slots, "cabinet_id": cabinet_id})

    return render


@router.get("/network")
async def live_network(
    request: Request,
    user: ConsoleUser,
    db: DatabaseDep,
    settings: SettingsDep,
    city: Annotated[str, Query(min_length=1, max_length=16)],
) -> StreamingResponse:
    user.visible_cities(city)  # 403 for a city not granted
    return _stream(request, settings, "counts", network_counts(db, settings, city))


@router.get("/cabinets/{cabinet_id}")
async def live_cabinet(
    request: Request,
    user: ConsoleUser,
    db: DatabaseDep,
    settings: SettingsDep,
    cabinet_id: Annotated[str, Path(min_length=1, max_length=40)],
) -> StreamingResponse:
    async with db.sessions() as session:
        city = await console_network.cabinet_city(session, cabinet_id)
    user.check_city(city, "cabinet", cabinet_id)
    return _stream(request, settings, "slots", cabinet_slots(db, cabinet_id))
