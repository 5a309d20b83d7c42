"""Finding a cabinet, reserving a pack there and swapping at it. The home page lists the cabinets around
the rider (around the phone when the browser shares its location, else around the middle of the rider's
city) with their ready packs, on a list and a map. A cabinet's page, opened by the QR link on it
(`/app/c/<id>`) or by typing its code, shows its ready packs and the price now (a coupon re-quotes it),
holds a charged pack for the rider on their way (`services.reservations`, as `POST /v1/reservations`)
and starts the swap through the same service as `POST /v1/swaps`; each once per form: a double tap
starts one."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from swapflow.api.deps import DatabaseDep, SessionDep, SettingsDep, TemporalDep
from swapflow.api.routers.cabinets import NEAR_PATTERN, parse_near
from swapflow.db.network import Battery
from swapflow.db.reservations import Reservation
from swapflow.domain.clock import utcnow
from swapflow.domain.errors import Conflict, NotFound, Refused
from swapflow.domain.network import CabinetCapability
from swapflow.domain.pricing import Quote
from swapflow.rider_app.rendering import PREFIX, render
from swapflow.rider_app.session import RiderUser
from swapflow.services import cabinets, reservations, rider_app
from swapflow.services.cabinets import CabinetStatus
from swapflow.services.network import find_rider
from swapflow.services.pricing import UnpricedCabinet, price_swap
from swapflow.services.swaps import create_swap
from swapflow.settings import Settings

router = APIRouter()

NEARBY = 20
"""How many cabinets the home page lists."""

CabinetId = Annotated[str, Path(min_length=1, max_length=40)]
Coupon = Annotated[str | None, Query(max_length=40)]
Near = Annotated[str | None, Query(pattern=NEAR_PATTERN, description="lat,lon of the phone")]

COUPON_WORDS = {
    "coupon_unknown": "there is no such coupon",
    "coupon_inactive": "the coupon is switched off",
    "coupon_not_yet_valid": "the coupon is not valid yet",
    "coupon_expired": "the coupon has expired",
    "coupon_exhausted": "the coupon has been used up",
    "coupon_rider_limit_reached": "you have used this coupon as often as it allows",
    "coupon_not_valid_in_city": "the coupon is not valid in this city",
    "coupon_not_valid_for_battery_model": "the coupon is not valid for this cabinet's packs",
    "coupon_currency_mismatch": "the coupon is in another currency",
    "coupon_below_minimum_price": "the swap costs less than the coupon's minimum",
}
"""Why a coupon was not applied, as the rider reads it (`CouponRejection`'s values)."""


@dataclass(frozen=True)
class CabinetView:
    """A cabinet as the rider's list shows it."""

    id: str
    station: str
    lat: float
    lon: float
    ready: int
    free: int
    online: bool | None
    """None: a command-only cabinet, which never says."""
    distance_km: float | None

    @classmethod
    def of(cls, status: CabinetStatus) -> CabinetView:
        cabinet, station = status.cabinet, status.station
        return cls(
            id=cabinet.id,
            station=station.name,
            lat=station.lat,
            lon=station.lon,
            ready=status.ready,
            free=status.free,
            online=None if cabinet.capability == CabinetCapability.COMMAND_ONLY else cabinet.online,
            distance_km=status.distance_km,
        )

    @property
    def distance(self) -> str:
        if self.distance_km is None:
            return ""
        return f"{round(self.distance_km * 1000, -1):.0f} m" if self.distance_km < 1 else f"{self.distance_km:.1f} km"

    @property
    def usable(self) -> bool:
        return self.swappable(held_here=False)

    def swappable(self, held_here: bool) -> bool:
        """Whether the rider may start a swap here now (with their own pack held here, others' ready or not)."""
        return self.online is not False and (self.ready > 0 or held_here) and self.free > 0


async def _nearby_context(session: SessionDep, settings: Settings, rider_id: str, near: str | None) -> dict[str, Any]:
    rider = await find_rider(session, rider_id)
    centre = parse_near(near) if near else await rider_app.city_centre(session, rider.city_code)
    found = await cabinets.cabinets(
        session,
        settings,
        city=None if near else rider.city_code,
        near=centre,
        radius_km=settings.rider_app.nearby_km,
        limit=NEARBY,
    )
    listed = [CabinetView.of(status) for status in found]
    map_data = {
        "centre": centre,
        "tile_url": settings.console.tile_url,
        "attribution": settings.console.tile_attribution,
        "cabinets": [
            {"id": c.id, "name": c.station, "lat": c.lat, "lon": c.lon, "ready": c.ready, "usable": c.usable}
            for c in listed
        ],
    }
    return {"cabinets": listed, "from_phone": near is not None, "city": rider.city_code, "map_data": map_data}


@router.get("", response_class=HTMLResponse)
async def home(
    request: Request, rider: RiderUser, session: SessionDep, settings: SettingsDep, near: Near = None
) -> HTMLResponse:
    context = await _nearby_context(session, settings, rider.id, near)
    return render(request, "home.html", {"section": "cabinets", **context}, rider=rider)


@router.get("/nearby", response_class=HTMLResponse)
async def nearby(
    request: Request, rider: RiderUser, session: SessionDep, settings: SettingsDep, near: Near = None
) -> HTMLResponse:
    """The list and the map's markers again, around the phone's location (asked for by the page's script)."""
    context = await _nearby_context(session, settings, rider.id, near)
    return render(request, "_nearby.html", context, rider=rider)


@router.get("/c")
async def by_code(
    rider: RiderUser, session: SessionDep, code: Annotated[str, Query(min_length=1, max_length=40)]
) -> RedirectResponse:
    """The cabinet whose code the rider typed."""
    return RedirectResponse(f"{PREFIX}/c/{await rider_app.cabinet_by_code(session, code)}", status_code=303)


async def _quote(session: SessionDep, rider_id: str, cabinet_id: str, coupon_code: str | None) -> Quote:
    try:
        quoted, _ = await price_swap(
            session, rider_id=rider_id, cabinet_id=cabinet_id, at=utcnow(), coupon_code=coupon_code or None
        )
    except UnpricedCabinet as exc:
        raise NotFound("cabinet", cabinet_id, detail=str(exc)) from exc
    return quoted


def _quote_context(quote: Quote, coupon_code: str | None) -> dict[str, Any]:
    rejected = quote.coupon_rejected
    return {
        "quote": quote,
        "coupon_code": coupon_code or "",
        "coupon_problem": COUPON_WORDS.get(rejected.value, rejected.value) if rejected else None,
    }


async def _cabinet_page(
    request: Request,
    rider: RiderUser,
    session: SessionDep,
    settings: Settings,
    cabinet_id: str,
    coupon_code: str | None,
    *,
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    status, _ = await cabinets.cabinet(session, settings, cabinet_id)
    ready: list[tuple[int, Battery]] = await cabinets.ready_packs(session, settings, cabinet_id)
    held: Reservation | None = await reservations.active_for(session, rider.id)
    context = {
        "section": "cabinets",
        "cabinet": CabinetView.of(status),
        "ready": ready,
        "reservation": held,
        "held_here": held is not None and held.cabinet_id == cabinet_id,
        "hold_minutes": round(settings.reservation.hold_s / 60),
        # The Idempotency-Keys: one per form shown, so a second tap of its button is the same swap (hold).
        "swap_token": secrets.token_urlsafe(18),
        "reserve_token": secrets.token_urlsafe(18),
        "error": error,
        **_quote_context(await _quote(session, rider.id, cabinet_id, coupon_code), coupon_code),
    }
    return render(request, "cabinet.html", context, rider=rider, status_code=status_code)


@router.get("/c/{cabinet_id}", response_class=HTMLResponse)
async def cabinet_page(
    request: Request,
    rider: RiderUser,
    session: SessionDep,
    settings: SettingsDep,
    cabinet_id: CabinetId,
    coupon_code: Coupon = None,
) -> HTMLResponse:
    return await _cabinet_page(request, rider, session, settings, cabinet_id, coupon_code)


@router.get("/c/{cabinet_id}/quote", response_class=HTMLResponse)
async def quote(
    request: Request, rider: RiderUser, session: SessionDep, cabinet_id: CabinetId, coupon_code: Coupon = None
) -> HTMLResponse:
    """The price again, with the coupon typed (the page's Apply button, over htmx)."""
    quoted = await _quote(session, rider.id, cabinet_id, coupon_code)
    return render(request, "_quote.html", _quote_context(quoted, coupon_code), rider=rider)


@router.post("/c/{cabinet_id}/swap")
async def swap_here(
    request: Request,
    rider: RiderUser,
    db: DatabaseDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    cabinet_id: CabinetId,
    swap_token: Annotated[str, Form(min_length=16, max_length=60)],
    coupon_code: Annotated[str | None, Form(max_length=40)] = None,
) -> Response:
    """Start the swap (answered once the return door is open, or the swap has failed) and show it."""
    coupon = (coupon_code or "").strip() or None
    try:
        order, _ = await create_swap(
            db,
            settings,
            temporal,
            rider_id=rider.id,
            cabinet_id=cabinet_id,
            coupon_code=coupon,
            idempotency_key=f"app:{swap_token}",
        )
    except Refused as refused:
        reason = str(refused.members.get("reason", ""))
        error = f"Your coupon cannot be used: {COUPON_WORDS.get(reason, refused.detail)}."
        async with db.sessions() as session:
            return await _cabinet_page(
                request, rider, session, settings, cabinet_id, coupon, error=error, status_code=422
            )
    return RedirectResponse(f"{PREFIX}/swaps/{order.id}", status_code=303)


RESERVE_WORDS = {
    "no_ready_battery": "this cabinet has no charged pack to hold right now",
    "cabinet_offline": "this cabinet is offline",
    "already_reserved": "you already hold a pack; cancel it first",
    "no_show_blocked": "you did not come for too many held packs lately, so you cannot reserve for a while",
}


@router.post("/c/{cabinet_id}/reserve")
async def reserve_here(
    request: Request,
    rider: RiderUser,
    db: DatabaseDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    cabinet_id: CabinetId,
    reserve_token: Annotated[str, Form(min_length=16, max_length=60)],
) -> Response:
    """Hold a charged pack here for the rider on their way, then show the cabinet with it."""
    try:
        await reservations.reserve(
            db, settings, temporal, rider_id=rider.id, cabinet_id=cabinet_id, idempotency_key=f"app:{reserve_token}"
        )
    except Conflict as refused:
        error = f"No pack held: {RESERVE_WORDS.get(str(refused.members.get('reason')), refused.detail)}."
        async with db.sessions() as session:
            return await _cabinet_page(
                request, rider, session, settings, cabinet_id, None, error=error, status_code=409
            )
    return RedirectResponse(f"{PREFIX}/c/{cabinet_id}", status_code=303)


@router.post("/reservations/{reservation_id}/cancel")
async def cancel_reservation(
    rider: RiderUser,
    db: DatabaseDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    reservation_id: Annotated[str, Path(min_length=1, max_length=40)],
) -> Response:
    """Let the held pack go; back to its cabinet's page."""
    async with db.sessions() as session:
        held = await reservations.find_reservation(session, reservation_id)
    if held.rider_id != rider.id:
        raise NotFound("reservation", reservation_id)
    await reservations.cancel(db, settings, temporal, reservation_id=reservation_id, by=rider.id)
    return RedirectResponse(f"{PREFIX}/c/{held.cabinet_id}", status_code=303)
