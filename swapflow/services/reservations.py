"""Riders' reservations of a charged pack: made once per Idempotency-Key, each held by workflow
`reservation/<id>` (which `start_reservation` starts: the one place that says how), cancelled, used by
the rider's swap at the cabinet, and read.

A reservation holds its slot in `slots.reservation_id`, claimed by a conditional UPDATE that also wants
the slot free of any swap: of two riders asking for a cabinet's last pack, exactly one gets it, and a
swap's pick (activities/swap.py) passes over a held slot unless the hold is its own rider's. A rider holds
at most one active reservation (a partial unique index), and one who let `no_show_limit` holds run out
within the window may not reserve for a while (domain/reservations.py)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import case, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.service import RPCError

from swapflow.db.engine import Database
from swapflow.db.network import Battery, Cabinet, City, Rider, Slot
from swapflow.db.reservations import Reservation
from swapflow.domain.clock import as_utc, utcnow
from swapflow.domain.errors import Conflict, NotFound
from swapflow.domain.network import CabinetCapability, DoorState
from swapflow.domain.reservations import ReservationStatus, blocked_until
from swapflow.domain.swaps import RiderStatus
from swapflow.services.cabinets import charged_pack
from swapflow.services.idempotency import create_once
from swapflow.services.temporal import TemporalConnector, connect, start_once
from swapflow.settings import Settings
from swapflow.workflows.reservation import ReservationWorkflow
from swapflow.workflows.reservation_contract import ReservationCancel, ReservationStart, reservation_workflow_id

REFUSED = "Reservation refused"


# ------------------------------------------------------------------------------------------ the workflow


async def start_reservation(temporal: TemporalConnector, settings: Settings, reservation: Reservation) -> None:
    """Start the workflow that holds an active reservation for what is left of its hold (once: a finished
    one is never started again). Unavailable while Temporal is unreachable; the same request starts it."""
    client = await connect(temporal, "Reservations unavailable")
    left = (as_utc(reservation.expires_at) - utcnow()).total_seconds()
    await start_once(
        client,
        ReservationWorkflow.run,
        ReservationStart(reservation_id=reservation.id, hold_s=max(left, 0.0)),
        workflow_id=reservation_workflow_id(reservation.id),
        task_queue=settings.temporal.task_queue,
    )


# ------------------------------------------------------------------------------------------ reserving


async def reserve(
    db: Database,
    settings: Settings,
    temporal: TemporalConnector,
    *,
    rider_id: str,
    cabinet_id: str,
    idempotency_key: str,
) -> tuple[Reservation, bool]:
    """Hold a charged pack at the cabinet for the rider (once per key) and start its hold's workflow.
    Returns (reservation, created). Conflict (with a `reason`) when there is no ready pack, the rider
    already holds one, or is blocked for no-shows."""
    try:
        async with db.transaction() as session:
            reservation, created = await open_reservation(
                session, settings, rider_id=rider_id, cabinet_id=cabinet_id, idempotency_key=idempotency_key
            )
    except IntegrityError:
        # Another request of the rider's won the race to the one active reservation a rider may hold.
        async with db.sessions() as session:
            held = await active_for(session, rider_id)
        if held is None:
            raise
        raise _already_holding(rider_id, held) from None
    if reservation.status == ReservationStatus.ACTIVE:
        await start_reservation(temporal, settings, reservation)
    return reservation, created


async def open_reservation(
    session: AsyncSession, settings: Settings, *, rider_id: str, cabinet_id: str, idempotency_key: str
) -> tuple[Reservation, bool]:
    """The rider's reservation under `idempotency_key`, its pack held now if new (without its workflow:
    `reserve` starts that). Returns (reservation, created)."""
    key = idempotency_key

    async def find() -> Reservation | None:
        return await session.scalar(
            select(Reservation).where(Reservation.rider_id == rider_id, Reservation.idempotency_key == key)
        )

    def differs(reservation: Reservation) -> str | None:
        if reservation.cabinet_id != cabinet_id:
            return f"Idempotency-Key {key!r} was used for a reservation at cabinet {reservation.cabinet_id!r}"
        return None

    async def create() -> Reservation:
        rider = await session.get(Rider, rider_id)
        if rider is None or rider.status != RiderStatus.ACTIVE:
            raise NotFound("rider", rider_id)
        cabinet = await session.get(Cabinet, cabinet_id)
        if cabinet is None:
            raise NotFound("cabinet", cabinet_id)
        now = utcnow()
        until = await no_show_block(session, settings, rider_id, now)
        if until is not None:
            raise Conflict(
                REFUSED,
                f"rider {rider_id!r} did not come for {settings.reservation.no_show_limit} reserved packs within "
                f"{settings.reservation.no_show_window_days:g} days; they may reserve again from {until.isoformat()}",
                reason="no_show_blocked",
                blocked_until=until.isoformat(),
            )
        held = await active_for(session, rider_id)
        if held is not None:
            raise _already_holding(rider_id, held)
        if cabinet.capability == CabinetCapability.REPORTING and not cabinet.online:
            raise Conflict(REFUSED, f"cabinet {cabinet_id!r} is offline", reason="cabinet_offline")
        reservation_id = uuid.uuid4().hex
        slot = await _hold_a_pack(session, settings, cabinet_id, reservation_id)
        if slot is None or slot.battery_serial is None:
            raise Conflict(REFUSED, f"cabinet {cabinet_id!r} has no charged pack to hold", reason="no_ready_battery")
        reservation = Reservation(
            id=reservation_id,
            rider_id=rider_id,
            idempotency_key=key,
            cabinet_id=cabinet_id,
            slot_no=slot.slot_no,
            battery_serial=slot.battery_serial,
            status=ReservationStatus.ACTIVE,
            created_at=now,
            expires_at=now + timedelta(seconds=settings.reservation.hold_s),
        )
        session.add(reservation)
        await session.flush()
        return reservation

    return await create_once(session, find=find, differs=differs, create=create, reused_title=REFUSED)


async def _hold_a_pack(session: AsyncSession, settings: Settings, cabinet_id: str, reservation_id: str) -> Slot | None:
    """Hold the best charged pack of the cabinet nobody holds or swaps, as a swap would pick it. The
    conditional UPDATE is the lock: of two concurrent claims of one slot only one sees its row count at 1."""
    candidates = (
        await session.scalars(
            select(Slot)
            .join(Battery, Battery.serial == Slot.battery_serial)
            .where(
                Slot.cabinet_id == cabinet_id,
                Slot.reserved_order_id.is_(None),
                Slot.reservation_id.is_(None),
                Slot.locked.is_(False),
                Slot.fault.is_(None),
                Slot.out_of_service.is_(None),
                Slot.door == DoorState.CLOSED,
                charged_pack(settings),
            )
            .order_by(Battery.soc.desc(), Slot.slot_no)
        )
    ).all()
    for slot in candidates:
        claimed = await session.execute(
            update(Slot)
            .where(
                Slot.id == slot.id,
                Slot.battery_serial == slot.battery_serial,
                Slot.reserved_order_id.is_(None),
                Slot.reservation_id.is_(None),
            )
            .values(reservation_id=reservation_id)
        )
        if claimed.rowcount == 1:  # type: ignore[attr-defined]  # an UPDATE's result is a CursorResult
            return slot
    return None


def _already_holding(rider_id: str, held: Reservation) -> Conflict:
    return Conflict(
        REFUSED,
        f"rider {rider_id!r} already holds reservation {held.id!r} at cabinet {held.cabinet_id!r}",
        reason="already_reserved",
        reservation_id=held.id,
    )


async def no_show_block(session: AsyncSession, settings: Settings, rider_id: str, now: datetime) -> datetime | None:
    """Until when the rider may not reserve for their no-shows; None: they may."""
    rule = settings.reservation
    if rule.no_show_limit <= 0:
        return None
    window = timedelta(days=rule.no_show_window_days)
    no_shows = await session.scalars(
        select(Reservation.ended_at).where(
            Reservation.rider_id == rider_id,
            Reservation.status == ReservationStatus.NO_SHOW,
            Reservation.ended_at > now - window,
        )
    )
    return blocked_until(
        [as_utc(at) for at in no_shows if at is not None],
        now=now,
        limit=rule.no_show_limit,
        window=window,
        block=timedelta(seconds=rule.no_show_block_s),
    )


# ------------------------------------------------------------------------------------------ ending


async def cancel(
    db: Database, settings: Settings, temporal: TemporalConnector, *, reservation_id: str, by: str
) -> Reservation:
    """Let a reservation's pack go (`by`: who asked) and tell its workflow. A cancelled one answers as it
    is; one that already ended otherwise is a Conflict."""
    async with db.transaction() as session:
        reservation = await session.get(Reservation, reservation_id, with_for_update=True)
        if reservation is None:
            raise NotFound("reservation", reservation_id)
        if reservation.status == ReservationStatus.ACTIVE:
            await end_hold(session, settings, reservation, ReservationStatus.CANCELLED, by=by)
        elif reservation.status != ReservationStatus.CANCELLED:
            raise Conflict(
                "Reservation not cancelled",
                f"reservation {reservation_id!r} already ended: {reservation.status}",
                reason="reservation_ended",
            )
    try:
        client = await temporal()
        await client.get_workflow_handle(reservation_workflow_id(reservation_id)).signal(
            ReservationWorkflow.cancel, ReservationCancel(by=by)
        )
    except (RuntimeError, RPCError):
        pass  # its workflow ended already, or is out of reach: its timer finds the reservation cancelled
    return reservation


async def end_hold(
    session: AsyncSession, settings: Settings, reservation: Reservation, status: ReservationStatus, by: str | None
) -> None:
    """End an active reservation as `status` and release its slot; a no-show records its fee (if any)."""
    reservation.status = status
    reservation.ended_at = utcnow()
    reservation.ended_by = by
    fee = settings.reservation.no_show_fee_minor
    if status == ReservationStatus.NO_SHOW and fee > 0:
        reservation.no_show_fee_minor = fee
        reservation.currency = await session.scalar(
            select(City.currency).join(Rider, Rider.city_code == City.code).where(Rider.id == reservation.rider_id)
        )
    await release_hold(session, reservation)


async def pack_waited(session: AsyncSession, reservation: Reservation) -> bool:
    """Whether the held pack was there for the rider to the end: still in its slot, held for them, the
    slot in service and the cabinet reachable. A hold that ran out otherwise is no fault of the rider's."""
    slot = await session.scalar(
        select(Slot).where(Slot.cabinet_id == reservation.cabinet_id, Slot.slot_no == reservation.slot_no)
    )
    cabinet = await session.get(Cabinet, reservation.cabinet_id)
    if slot is None or cabinet is None:
        return False
    return (
        slot.reservation_id == reservation.id
        and slot.battery_serial == reservation.battery_serial
        and not slot.locked
        and slot.fault is None
        and slot.out_of_service is None
        and (cabinet.online or cabinet.capability == CabinetCapability.COMMAND_ONLY)
    )


async def use_reservation(
    session: AsyncSession, *, rider_id: str, cabinet_id: str, order_id: str
) -> Reservation | None:
    """The rider's active reservation at the cabinet, marked used by the swap `order_id` (a conditional
    UPDATE: a hold that ran out meanwhile is not used); None if there is none. Its slot stays held for
    the swap's pick to claim; the caller releases the hold once the swap has its pack."""
    reservation = await session.scalar(
        select(Reservation).where(
            Reservation.rider_id == rider_id,
            Reservation.cabinet_id == cabinet_id,
            Reservation.status == ReservationStatus.ACTIVE,
        )
    )
    if reservation is None:
        return None
    used = await session.execute(
        update(Reservation)
        .where(Reservation.id == reservation.id, Reservation.status == ReservationStatus.ACTIVE)
        .values(status=ReservationStatus.USED, used_by_order_id=order_id, ended_at=utcnow())
        .execution_options(synchronize_session="fetch")
    )
    return reservation if used.rowcount == 1 else None  # type: ignore[attr-defined]  # a CursorResult


async def release_hold(session: AsyncSession, reservation: Reservation) -> None:
    """Release the reservation's slot if it still holds it."""
    await session.execute(
        update(Slot)
        .where(
            Slot.cabinet_id == reservation.cabinet_id,
            Slot.slot_no == reservation.slot_no,
            Slot.reservation_id == reservation.id,
        )
        .values(reservation_id=None)
    )


# ------------------------------------------------------------------------------------------ reading


async def find_reservation(session: AsyncSession, reservation_id: str) -> Reservation:
    """The reservation, or NotFound."""
    reservation = await session.get(Reservation, reservation_id)
    if reservation is None:
        raise NotFound("reservation", reservation_id)
    return reservation


async def active_for(session: AsyncSession, rider_id: str) -> Reservation | None:
    """The rider's active reservation, if they hold one."""
    return await session.scalar(
        select(Reservation).where(Reservation.rider_id == rider_id, Reservation.status == ReservationStatus.ACTIVE)
    )


async def rider_reservations(session: AsyncSession, rider_id: str, *, limit: int) -> list[Reservation]:
    """The rider's reservations, the active one first, then the newest."""
    active_first = case((Reservation.status == ReservationStatus.ACTIVE, 0), else_=1)
    return list(
        (
            await session.scalars(
                select(Reservation)
                .where(Reservation.rider_id == rider_id)
                .order_by(active_first, Reservation.created_at.desc(), Reservation.id)
                .limit(limit)
            )
        ).all()
    )
