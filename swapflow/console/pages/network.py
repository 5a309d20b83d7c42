"""The network page: a city's map of stations coloured (and shaped) by their cabinets' state, the counts
per state, and a filtered, paginated table of cabinets."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from swapflow.api.auth import Principal
from swapflow.api.deps import SessionDep, SettingsDep
from swapflow.console.rendering import render
from swapflow.console.session import ConsoleUser
from swapflow.domain.errors import NotFound
from swapflow.services import console_network
from swapflow.services.console_network import STATE_ORDER, CabinetState, MapStation

router = APIRouter()

PER_PAGE = 50
STATE_LABELS = {
    CabinetState.ONLINE: "online",
    CabinetState.OFFLINE: "offline",
    CabinetState.ALERT: "alert",
    CabinetState.NO_CHARGED_PACK: "no charged pack",
}


async def _city(session: SessionDep, user: Principal, asked: str | None) -> tuple[str, list[str]]:
    """The city shown (asked, or the first the user may see) and the codes of all they may see."""
    visible = [c.code for c in await console_network.cities(session, user.visible_cities())]
    if asked is not None:
        user.visible_cities(asked)  # 403 for a city not granted
        if asked not in visible:
            raise NotFound("city", asked)
        return asked, visible
    if not visible:
        raise NotFound("city", "")
    return visible[0], visible


def _station_markers(stations: list[MapStation]) -> list[dict[str, object]]:
    """One marker per station, in its worst cabinet's state, with its cabinets counted by state."""
    return [
        {
            "id": station.id,
            "name": station.name,
            "lat": station.lat,
            "lon": station.lon,
            "state": station.state.value,
            "counts": {state.value: count for state, count in station.counts.items() if count},
        }
        for station in stations
    ]


def counts_context(city: str, counts: dict[CabinetState, int]) -> dict[str, object]:
    """What the counts fragment (network/_counts.html) shows."""
    return {"city": city, "counts": counts, "total": sum(counts.values()), "labels": STATE_LABELS}


@router.get("/network", response_class=HTMLResponse)
async def network(
    request: Request,
    user: ConsoleUser,
    session: SessionDep,
    settings: SettingsDep,
    city: Annotated[str | None, Query(max_length=16)] = None,
) -> HTMLResponse:
    shown, visible = await _city(session, user, city)
    stations = await console_network.map_stations(session, settings, shown)
    counts = {state: sum(station.counts[state] for station in stations) for state in STATE_ORDER}
    context = {
        "section": "network",
        "cities": visible,
        "markers": _station_markers(stations),
        "tile_url": settings.console.tile_url,
        "tile_attribution": settings.console.tile_attribution,
        "states": STATE_ORDER,
        "labels_json": {state.value: label for state, label in STATE_LABELS.items()},
        **counts_context(shown, counts),
    }
    return render(request, "network/map.html", context, user=user)


@router.get("/network/cabinets", response_class=HTMLResponse)
async def cabinet_table(
    request: Request,
    user: ConsoleUser,
    session: SessionDep,
    settings: SettingsDep,
    city: Annotated[str | None, Query(max_length=16)] = None,
    state: Annotated[CabinetState | Literal[""] | None, Query(description="Empty: any (the form's choice).")] = None,
    station: Annotated[str | None, Query(max_length=40, description="A station's cabinets (the map's link).")] = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    city, state, station = city or None, state or None, station or None
    visible_cities = user.visible_cities(city)
    visible = [c.code for c in await console_network.cities(session, user.visible_cities())]
    listing = await console_network.cabinet_page(
        session, settings, cities=visible_cities, city=city, state=state, station=station, page=page, per_page=PER_PAGE
    )
    filters = (("city", city), ("state", state.value if state else None), ("station", station))
    query = urlencode({k: v for k, v in filters if v})
    context = {
        "section": "network",
        "cities": visible,
        "city": city,
        "state": state,
        "station": station,
        "states": STATE_ORDER,
        "labels": STATE_LABELS,
        "page": listing,
        "base_query": query,
    }
    return render(request, "network/table.html", context, user=user)
