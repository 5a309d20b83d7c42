"""The network page: a city's map of stations coloured (and shaped) by their cabinets' state, the counts
per state, and a filtered, paginated table of cabinets."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from swapflow.api.auth import Principal
from swapflow.api.deps import SessionDep, SettingsDep
from swapflow.console.rendering import render
from swapflow.console.session import ConsoleUser
from swapflow.domain.errors import NotFound
from swapflow.services import console_network
from swapflow.services.console_network import STATE_ORDER, CabinetState, MapCabinet, count_states

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


def _station_markers(cabinets: list[MapCabinet]) -> list[dict[str, object]]:
    """One marker per station, in its worst cabinet's state, listing its cabinets."""
    stations: dict[str, dict[str, object]] = {}
    for row in cabinets:
        marker = stations.setdefault(
            row.station_id,
            {"id": row.station_id, "name": row.station_name, "lat": row.lat, "lon": row.lon, "cabinets": []},
        )
        marker["cabinets"].append({"id": row.id, "state": row.state.value})  # type: ignore[attr-defined]
    for marker in stations.values():
        states = [CabinetState(c["state"]) for c in marker["cabinets"]]  # type: ignore[attr-defined]
        marker["state"] = min(states, key=STATE_ORDER.index).value
    return list(stations.values())


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
    cabinets = await console_network.map_cabinets(session, settings, shown)
    context = {
        "section": "network",
        "cities": visible,
        "markers": _station_markers(cabinets),
        "tile_url": settings.console.tile_url,
        "tile_attribution": settings.console.tile_attribution,
        "states": STATE_ORDER,
        "labels_json": {state.value: label for state, label in STATE_LABELS.items()},
        **counts_context(shown, count_states(c.state for c in cabinets)),
    }
    return render(request, "network/map.html", context, user=user)


@router.get("/network/cabinets", response_class=HTMLResponse)
async def cabinet_table(
    request: Request,
    user: ConsoleUser,
    session: SessionDep,
    settings: SettingsDep,
    city: Annotated[str | None, Query(max_length=16)] = None,
    state: CabinetState | None = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    city = city or None
    visible_cities = user.visible_cities(city)
    visible = [c.code for c in await console_network.cities(session, user.visible_cities())]
    listing = await console_network.cabinet_page(
        session, settings, cities=visible_cities, city=city, state=state, page=page, per_page=PER_PAGE
    )
    query = urlencode({k: v for k, v in (("city", city), ("state", state.value if state else None)) if v})
    context = {
        "section": "network",
        "cities": visible,
        "city": city,
        "state": state,
        "states": STATE_ORDER,
        "labels": STATE_LABELS,
        "page": listing,
        "base_query": query,
    }
    return render(request, "network/table.html", context, user=user)
