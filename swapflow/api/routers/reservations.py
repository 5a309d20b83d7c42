"""Reservations: a rider holds a charged pack at a cabinet for a while (workflow `reservation/<id>`), swaps
for it there, or lets it go. Made once per Idempotency-Key; operators of the cabinet's city may read and
cancel them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.api.auth import STAFF, Principal, check_rider_access, require
from swapflow.api.deps import DatabaseDep, IdempotencyKey, SessionDep, SettingsDep, TemporalDep, answer_created
from swapflow.api.problems import problem_responses
from swapflow.api.reservation_schemas import ReservationCreate, ReservationView
from swapflow.db.cities import cabinet_city
from swapflow.db.reservations import Reservation
from swapflow.domain.errors import Forbidden, NotFound
from swapflow.services import reservations

router = APIRouter(tags=["reservations"])

Rider = Annotated[Principal, Depends(require(riders=True))]
RiderOrStaff = Annotated[Principal, Depends(require(*STAFF, riders=True))]


async def _visible(session: AsyncSession, principal: Principal, reservation_id: str) -> Reservation:
    """The reservation if the caller may see it: its rider, or an operator of its cabinet's city (404 else)."""
    reservation = await reservations.find_reservation(session, reservation_id)
    if principal.is_rider and reservation.rider_id != principal.id:
        raise NotFound("reservation", reservation_id)
    if not principal.is_rider:
        principal.check_city(await cabinet_city(session, reservation.cabinet_id) or "", "reservation", reservation_id)
    return reservation


@router.post(
    "/v1/reservations",
    status_code=status.HTTP_201_CREATED,
    response_model=ReservationView,
    responses={
        200: {"model": ReservationView, "description": "The reservation this Idempotency-Key already made"},
        **problem_responses(404, 409, 503),
    },
)
async def create_reservation(
    body: ReservationCreate,
    response: Response,
    db: DatabaseDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    idempotency_key: IdempotencyKey,
    principal: Rider,
) -> ReservationView:
    """Hold a charged pack at the cabinet for the calling rider, for `SWAPFLOW_RESERVATION_HOLD_S`; the
    rider's swap there takes it. 409 with a `reason`: `no_ready_battery`, `already_reserved` (one at a
    time), `no_show_blocked` (too many holds not come for; `blocked_until` says until when),
    `cabinet_offline`. The same Idempotency-Key answers the same reservation."""
    if not principal.is_rider:
        raise Forbidden("a rider reserves a pack, for themselves")
    reservation, created = await reservations.reserve(
        db, settings, temporal, rider_id=principal.id, cabinet_id=body.cabinet_id, idempotency_key=idempotency_key
    )
    answer_created(response, created)
    return ReservationView.of(reservation)


@router.get("/v1/reservations/{reservation_id}", response_model=ReservationView)
async def get_reservation(reservation_id: str, session: SessionDep, principal: RiderOrStaff) -> ReservationView:
    """A reservation: the pack held, until when, and how the hold ended."""
    return ReservationView.of(await _visible(session, principal, reservation_id))


@router.post(
    "/v1/reservations/{reservation_id}/cancel",
    response_model=ReservationView,
    responses=problem_responses(409),
)
async def cancel_reservation(
    reservation_id: str,
    db: DatabaseDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    principal: RiderOrStaff,
) -> ReservationView:
    """Let the held pack go. Cancelling a cancelled reservation answers it again; one that ended otherwise
    (used, run out) is a 409."""
    async with db.sessions() as session:
        await _visible(session, principal, reservation_id)
    cancelled = await reservations.cancel(db, settings, temporal, reservation_id=reservation_id, by=principal.id)
    return ReservationView.of(cancelled)


@router.get("/v1/riders/{rider_id}/reservations", response_model=list[ReservationView])
async def list_rider_reservations(
    rider_id: str,
    session: SessionDep,
    principal: RiderOrStaff,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> list[ReservationView]:
    """A rider's reservations, the active one first, then the newest."""
    await check_rider_access(session, principal, rider_id, "rider", rider_id)
    return [ReservationView.of(r) for r in await reservations.rider_reservations(session, rider_id, limit=limit)]
