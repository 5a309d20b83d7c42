"""Short database steps of a swap, run as local activities (one history event each): admit and reserve,
record stages, take the returned pack into custody, finish. Each is idempotent: a retry after a crash
finds its own earlier effect and changes nothing."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, and_, case, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity
from temporalio.exceptions import ApplicationError

from swapflow.db.engine import Database
from swapflow.db.money import Payment
from swapflow.db.network import Battery, Cabinet, Rider, Slot
from swapflow.db.reservations import Reservation
from swapflow.db.swaps import CustodyEvent, SafetyEvent, SwapOrder
from swapflow.domain.checks import present
from swapflow.domain.clock import as_utc, utcnow
from swapflow.domain.network import BatteryStatus, CabinetCapability, CustodianKind, DoorState, slot_ref
from swapflow.domain.pricing import Quote, without_coupon
from swapflow.domain.safety import BatteryLimits, check_pack
from swapflow.domain.swaps import RiderStatus, SwapStage, SwapStatus
from swapflow.ops.alerts import raise_alert
from swapflow.payments.commissions import accrue_swap
from swapflow.payments.ledger import DEFERRED_REVENUE, SWAP_REVENUE, Posting, post_transaction
from swapflow.services.pricing import live_redemption, price_swap, redeem_coupon, release_redemption
from swapflow.services.reservations import release_hold, use_reservation
from swapflow.settings import Settings
from swapflow.workflows.swap_contract import (
    Admission,
    CouponRelease,
    FaultReport,
    ReplaceSlot,
    ReturnCheck,
    ReturnVerdict,
    SlotReplacement,
    SlotRole,
    StageUpdate,
    SwapFinish,
    SwapRejectedError,
    SwapRequest,
)


async def transfer_custody(
    session: AsyncSession,
    battery: Battery,
    *,
    to_kind: CustodianKind,
    to_ref: str,
    reason: str,
    key: str,
    order_id: str | None,
) -> None:
    """Move a battery to a new custodian and record the change (brief, invariant 1). Idempotent by key."""
    if await session.scalar(select(CustodyEvent.id).where(CustodyEvent.key == key)) is not None:
        return
    session.add(
        CustodyEvent(
            key=key,
            battery_serial=battery.serial,
            from_kind=battery.custodian_kind,
            from_ref=battery.custodian_ref,
            to_kind=to_kind,
            to_ref=to_ref,
            reason=reason,
            order_id=order_id,
        )
    )
    battery.custodian_kind = to_kind
    battery.custodian_ref = to_ref


def _unheld_or(held_for: str | None) -> ColumnElement[bool]:
    """A slot held for no reservation, or for `held_for` (the swapping rider's own)."""
    unheld = Slot.reservation_id.is_(None)
    return unheld if held_for is None else or_(unheld, Slot.reservation_id == held_for)


def _append_step(order: SwapOrder, update: StageUpdate) -> None:
    # A new list, so SQLAlchemy sees the JSON column change.
    order.steps = [
        *order.steps,
        {"step": update.step, "outcome": update.outcome, "detail": update.detail, "at": utcnow().isoformat()},
    ]
    order.stage = update.stage


class SwapRecords:
    """The swap's database steps; one instance per worker, holding the database."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    async def _order(self, session: AsyncSession, order_id: str) -> SwapOrder:
        order = await session.get(SwapOrder, order_id)
        if order is None:
            raise ApplicationError(f"no swap order {order_id}", non_retryable=True)
        return order

    async def _candidates(
        self, session: AsyncSession, cabinet_id: str, role: SlotRole, held_for: str | None = None
    ) -> Sequence[Slot]:
        """Slots that could take a role now: free, unlocked, fault-free, door shut, held for no reservation
        but `held_for` (the rider's own); for the charged role holding a ready pack (charged, healthy, in
        service), the held one first, then the best."""
        usable = and_(
            Slot.cabinet_id == cabinet_id,
            Slot.reserved_order_id.is_(None),
            _unheld_or(held_for),
            Slot.locked.is_(False),
            Slot.fault.is_(None),
            Slot.out_of_service.is_(None),
            Slot.door == DoorState.CLOSED,
        )
        if role == SlotRole.RETURN:
            return (
                await session.scalars(select(Slot).where(usable, Slot.battery_serial.is_(None)).order_by(Slot.slot_no))
            ).all()
        held_first = [] if held_for is None else [case((Slot.reservation_id == held_for, 0), else_=1)]
        return (
            await session.scalars(
                select(Slot)
                .join(Battery, Battery.serial == Slot.battery_serial)
                .where(
                    usable,
                    Battery.status == BatteryStatus.IN_SERVICE,
                    Battery.soc >= self.settings.swap.ready_soc_threshold,
                    Battery.soh >= self.settings.swap.min_soh,
                )
                .order_by(*held_first, Battery.soc.desc(), Slot.slot_no)
            )
        ).all()

    async def _reserve_first(
        self, session: AsyncSession, order_id: str, candidates: Sequence[Slot], held_for: str | None = None
    ) -> Slot | None:
        """Claim the first candidate slot nobody else claimed meanwhile (nor held for another rider's
        reservation). The conditional UPDATE is the lock: of two concurrent swaps, or a swap and a
        reservation, only one sees its row count at 1."""
        for slot in candidates:
            if slot.reserved_order_id == order_id:
                return slot
            claimed = await session.execute(
                update(Slot)
                .where(
                    Slot.id == slot.id,
                    Slot.reserved_order_id.is_(None),
                    _unheld_or(held_for),
                )
                .values(reserved_order_id=order_id, reservation_id=None)
            )
            if claimed.rowcount == 1:  # type: ignore[attr-defined]  # an UPDATE's result is a CursorResult
                return slot
        return None

    @activity.defn(name="admit_swap")
    async def admit(self, request: SwapRequest) -> Admission:
        """Validate the rider and the cabinet, reserve a charged pack and an empty slot, and price the swap."""
        async with self.db.transaction() as session:
            order = await self._order(session, request.order_id)
            if order.return_slot_no is not None and order.charged_slot_no is not None:
                return await self._admission_of(session, order)
            rider = await session.get(Rider, request.rider_id)
            if rider is None or rider.status != RiderStatus.ACTIVE:
                raise SwapRejectedError("rider_not_eligible")
            rider_battery = await session.scalar(
                select(Battery).where(Battery.custodian_kind == CustodianKind.RIDER, Battery.custodian_ref == rider.id)
            )
            if rider_battery is None:
                raise SwapRejectedError("rider_holds_no_battery")
            cabinet = await session.get(Cabinet, request.cabinet_id)
            if cabinet is None:
                raise SwapRejectedError("unknown_cabinet")
            # A command-only cabinet never reports; its swaps are confirmed by the packs' own telemetry.
            if cabinet.capability == CabinetCapability.REPORTING and not cabinet.online:
                raise SwapRejectedError("cabinet_offline")

            # The rider's reservation here is used by this swap (a rejection below rolls that back too).
            reservation = await use_reservation(session, rider_id=rider.id, cabinet_id=cabinet.id, order_id=order.id)
            held_for = reservation.id if reservation is not None else None
            charged = await self._candidates(session, cabinet.id, SlotRole.CHARGED, held_for)
            empty = await self._candidates(session, cabinet.id, SlotRole.RETURN)
            if not charged:
                raise SwapRejectedError("no_charged_battery")
            if not empty:
                raise SwapRejectedError("no_free_slot")
            charged_slot = await self._reserve_first(session, order.id, charged, held_for)
            return_slot = await self._reserve_first(session, order.id, empty)
            if charged_slot is None:
                raise SwapRejectedError("no_charged_battery")
            if return_slot is None:
                raise SwapRejectedError("no_free_slot")
            if reservation is not None:  # a hold the pick passed over (its pack went bad meanwhile) goes free
                await release_hold(session, reservation)

            order.return_slot_no = return_slot.slot_no
            order.charged_slot_no = charged_slot.slot_no
            order.issued_battery_serial = charged_slot.battery_serial
            priced = await self._price(session, order, request)
            _append_step(
                order,
                StageUpdate(
                    order_id=order.id,
                    stage=SwapStage.RESERVED,
                    step="admit",
                    detail=f"return slot {return_slot.slot_no}, charged slot {charged_slot.slot_no}",
                ),
            )
            return Admission(
                return_slot_no=return_slot.slot_no,
                charged_slot_no=charged_slot.slot_no,
                charged_battery_serial=charged_slot.battery_serial or "",
                rider_battery_serial=rider_battery.serial,
                price_minor=priced.total_minor,
                currency=priced.currency,
                capability=cabinet.capability,
                coupon_code=priced.coupon_code,
                reservation_id=held_for,
            )

    async def _price(self, session: AsyncSession, order: SwapOrder, request: SwapRequest) -> Quote:
        """Price the swap as of when the rider asked for it (the order's creation, not now: a retry or a
        slow queue must not move it into another peak window), redeem the coupon, record the breakdown.
        A coupon that stopped applying since the API checked it (used up meanwhile, expired) is left out,
        and the steps say why."""
        priced, coupon = await price_swap(
            session,
            rider_id=order.rider_id,
            cabinet_id=order.cabinet_id,
            at=as_utc(order.created_at),
            coupon_code=request.coupon_code,
        )
        if priced.coupon_code is not None:
            refused = await redeem_coupon(
                session,
                present(coupon, f"coupon {priced.coupon_code}"),
                order_id=order.id,
                rider_id=order.rider_id,
                discount_minor=priced.discount_minor,
            )
            if refused is not None:
                priced = without_coupon(priced, refused)
        if priced.coupon_rejected is not None:
            _append_step(
                order,
                StageUpdate(
                    order_id=order.id,
                    stage=order.stage,
                    step="coupon",
                    outcome="not_applied",
                    detail=f"{request.coupon_code}: {priced.coupon_rejected}",
                ),
            )
        order.price_minor = priced.total_minor
        order.currency = priced.currency
        order.price_breakdown = priced.model_dump(mode="json")
        _append_step(
            order,
            StageUpdate(
                order_id=order.id,
                stage=order.stage,
                step="price",
                detail=f"{priced.total_minor} {priced.currency}"
                + (f", coupon {priced.coupon_code}" if priced.coupon_code else ""),
            ),
        )
        return priced

    async def _admission_of(self, session: AsyncSession, order: SwapOrder) -> Admission:
        rider_battery = await session.scalar(
            select(Battery.serial).where(
                Battery.custodian_kind == CustodianKind.RIDER, Battery.custodian_ref == order.rider_id
            )
        )
        cabinet = present(await session.get(Cabinet, order.cabinet_id), f"cabinet {order.cabinet_id}")
        return Admission(
            return_slot_no=order.return_slot_no or 0,
            charged_slot_no=order.charged_slot_no or 0,
            charged_battery_serial=order.issued_battery_serial or "",
            rider_battery_serial=rider_battery or order.returned_battery_serial or "",
            price_minor=order.price_minor or 0,
            currency=order.currency or "",
            capability=cabinet.capability,
            coupon_code=await live_redemption(session, order.id),
            reservation_id=await session.scalar(select(Reservation.id).where(Reservation.used_by_order_id == order.id)),
        )

    @activity.defn(name="record_swap_stage")
    async def record_stage(self, update: StageUpdate) -> None:
        """Record where the swap is and how its last step went."""
        async with self.db.transaction() as session:
            order = await self._order(session, update.order_id)
            if update.stage == SwapStage.RETURN_DOOR_OPEN and order.return_door_opened_at is None:
                order.return_door_opened_at = utcnow()
            _append_step(order, update)

    @activity.defn(name="accept_returned_battery")
    async def accept_return(self, check: ReturnCheck) -> ReturnVerdict:
        """Authenticate the returned pack and check it against its model's safety limits, recording a
        safety event either way. An accepted pack goes into the slot's custody; a rejected one is held
        in quarantine in its slot, which is locked so it never joins the ready pool, and an alert is raised."""
        reading = check.reading
        async with self.db.transaction() as session:
            order = await self._order(session, check.order_id)
            slot = await session.scalar(
                select(Slot).where(Slot.cabinet_id == check.cabinet_id, Slot.slot_no == check.slot_no)
            )
            if slot is None:
                raise LookupError(f"slot {check.slot_no} of cabinet {check.cabinet_id} is missing")
            battery = await session.get(Battery, reading.serial)
            order.returned_battery_serial = reading.serial
            reasons: list[str] = []
            limits: BatteryLimits | None = None
            if battery is None:
                reasons.append("returned_battery_not_registered")
            else:
                if reading.serial != check.expected_serial or battery.custodian_ref != check.rider_id:
                    reasons.append("returned_battery_not_riders")
                limits = self.settings.swap.battery_limits.get(battery.model, self.settings.swap.default_battery_limits)
                reasons.extend(check_pack(reading, limits).reasons)
            session.add(
                SafetyEvent(
                    key=f"swap:{check.order_id}:return-check",
                    battery_serial=reading.serial,
                    battery_model=battery.model if battery else None,
                    order_id=check.order_id,
                    cabinet_id=check.cabinet_id,
                    slot_no=check.slot_no,
                    reading=reading.model_dump(mode="json"),
                    limits=limits.model_dump(mode="json") if limits else None,
                    verdict="rejected" if reasons else "accepted",
                    reasons=reasons,
                )
            )
            if battery is not None:
                battery.soc, battery.soh, battery.voltage_v = reading.soc, reading.soh, reading.voltage_v
                battery.temperature_c, battery.cycle_count = reading.temperature_c, reading.cycle_count
                battery.reading_at = utcnow()
                slot.battery_serial = battery.serial
            if reasons:
                reason = "; ".join(reasons)
                slot.locked = True
                slot.out_of_service = reasons[0][:100]
                if battery is not None:
                    battery.status = BatteryStatus.QUARANTINED
                    await transfer_custody(
                        session,
                        battery,
                        to_kind=CustodianKind.QUARANTINE,
                        to_ref=slot_ref(check.cabinet_id, check.slot_no),
                        reason=reason[:200],
                        key=f"swap:{check.order_id}:return",
                        order_id=check.order_id,
                    )
                await raise_alert(
                    session,
                    FaultReport(
                        kind="battery_quarantined",
                        severity="critical",
                        cabinet_id=check.cabinet_id,
                        slot_no=check.slot_no,
                        battery_serial=reading.serial,
                        order_id=check.order_id,
                        message=f"returned pack {reading.serial} quarantined in slot {check.slot_no}: {reason}",
                    ),
                )
                _append_step(
                    order,
                    StageUpdate(
                        order_id=order.id,
                        stage=SwapStage.RETURN_INSERTED,
                        step="verify_return",
                        outcome="rejected",
                        detail=reason,
                    ),
                )
                return ReturnVerdict(accepted=False, reason=reasons[0], quarantined=True)

            if battery is None:  # an unregistered pack was refused above
                raise LookupError(f"battery {reading.serial} is missing")
            await transfer_custody(
                session,
                battery,
                to_kind=CustodianKind.SLOT,
                to_ref=slot_ref(check.cabinet_id, check.slot_no),
                reason="swap return",
                key=f"swap:{check.order_id}:return",
                order_id=check.order_id,
            )
            _append_step(
                order,
                StageUpdate(
                    order_id=order.id, stage=SwapStage.RETURN_VERIFIED, step="verify_return", detail=reading.serial
                ),
            )
            return ReturnVerdict(accepted=True)

    @activity.defn(name="replace_swap_slot")
    async def replace_slot(self, request: ReplaceSlot) -> SlotReplacement:
        """A reserved slot's door failed: mark the slot faulty, raise an alert, release it, and reserve
        another slot for the same role if one is free."""
        async with self.db.transaction() as session:
            order = await self._order(session, request.order_id)
            faulty = await session.scalar(
                select(Slot).where(Slot.cabinet_id == request.cabinet_id, Slot.slot_no == request.faulty_slot_no)
            )
            if faulty is None:
                raise LookupError(f"slot {request.faulty_slot_no} of cabinet {request.cabinet_id} is missing")
            if faulty.reserved_order_id == order.id:
                faulty.reserved_order_id = None
                faulty.out_of_service = request.reason[:100]
                await raise_alert(
                    session,
                    FaultReport(
                        kind="door_fault",
                        severity="warning",
                        cabinet_id=request.cabinet_id,
                        slot_no=request.faulty_slot_no,
                        order_id=order.id,
                        message=f"slot {request.faulty_slot_no} door: {request.reason}",
                    ),
                )
            current = order.return_slot_no if request.role == SlotRole.RETURN else order.charged_slot_no
            if current != request.faulty_slot_no:  # a retry after this already happened
                slot = await session.scalar(
                    select(Slot).where(Slot.cabinet_id == request.cabinet_id, Slot.slot_no == current)
                )
                return SlotReplacement(slot_no=current, battery_serial=slot.battery_serial if slot else None)
            replacement = await self._reserve_first(
                session, order.id, await self._candidates(session, request.cabinet_id, request.role)
            )
            step, detail = f"replace_{request.role}_slot", f"slot {request.faulty_slot_no} failed ({request.reason})"
            if replacement is None:
                _append_step(
                    order,
                    StageUpdate(order_id=order.id, stage=order.stage, step=step, outcome="none_free", detail=detail),
                )
                return SlotReplacement(slot_no=None)
            if request.role == SlotRole.RETURN:
                order.return_slot_no = replacement.slot_no
            else:
                order.charged_slot_no = replacement.slot_no
                order.issued_battery_serial = replacement.battery_serial
            _append_step(
                order,
                StageUpdate(
                    order_id=order.id, stage=order.stage, step=step, detail=f"{detail}; now slot {replacement.slot_no}"
                ),
            )
            return SlotReplacement(slot_no=replacement.slot_no, battery_serial=replacement.battery_serial)

    @activity.defn(name="release_swap_coupon")
    async def release_coupon(self, release: CouponRelease) -> None:
        """Compensation: give back the coupon a failed swap redeemed (once; a retry changes nothing)."""
        async with self.db.transaction() as session:
            order = await self._order(session, release.order_id)
            code = await release_redemption(session, order.id, release.reason)
            if code is not None:
                _append_step(
                    order, StageUpdate(order_id=order.id, stage=order.stage, step="release_coupon", detail=code)
                )

    @activity.defn(name="report_swap_fault")
    async def report_fault(self, report: FaultReport) -> None:
        """Raise an alert for a problem a swap cannot solve by itself (it ends; a person looks)."""
        async with self.db.transaction() as session:
            await raise_alert(session, report)

    @activity.defn(name="finish_swap")
    async def finish(self, finish: SwapFinish) -> None:
        """End the swap: on completion hand the charged pack to the rider, recognise the revenue and accrue
        the partners' commissions on it; either way release every reservation the swap still holds."""
        async with self.db.transaction() as session:
            order = await self._order(session, finish.order_id)
            if order.status != SwapStatus.IN_PROGRESS:
                return
            finished_at = utcnow()
            if finish.status == SwapStatus.COMPLETED:
                await self._hand_over_charged(session, order, finished_at)
                _append_step(order, StageUpdate(order_id=order.id, stage=SwapStage.COMPLETED, step="finish"))
            else:
                order.failure_reason = finish.reason
                _append_step(
                    order,
                    StageUpdate(
                        order_id=order.id, stage=SwapStage.FAILED, step="finish", outcome="failed", detail=finish.reason
                    ),
                )
            order.status = finish.status
            order.finished_at = finished_at
            await session.execute(update(Slot).where(Slot.reserved_order_id == order.id).values(reserved_order_id=None))

    async def _hand_over_charged(self, session: AsyncSession, order: SwapOrder, completed_at: datetime) -> None:
        slot = await session.scalar(
            select(Slot).where(Slot.cabinet_id == order.cabinet_id, Slot.slot_no == order.charged_slot_no)
        )
        battery = await session.get(Battery, order.issued_battery_serial)
        if slot is None or battery is None:
            raise LookupError(
                f"order {order.id}: charged slot {order.charged_slot_no} or battery {order.issued_battery_serial} "
                "is missing"
            )
        slot.battery_serial = None
        slot.charging = False
        await transfer_custody(
            session,
            battery,
            to_kind=CustodianKind.RIDER,
            to_ref=order.rider_id,
            reason="swap issue",
            key=f"swap:{order.id}:issue",
            order_id=order.id,
        )
        # What the charge captured is what was deferred (a subscription swap captures its per-swap value).
        captured = await session.scalar(
            select(Payment.amount_minor).where(Payment.key == f"swap:{order.id}:charge", Payment.status == "captured")
        )
        amount = order.price_minor if captured is None else captured
        if amount:
            await post_transaction(
                session,
                key=f"swap:{order.id}:revenue",
                kind="swap_revenue",
                currency=order.currency or "",
                order_id=order.id,
                memo="swap completed: revenue recognised",
                postings=[Posting(DEFERRED_REVENUE, amount), Posting(SWAP_REVENUE, -amount)],
            )
            await accrue_swap(session, order, amount, completed_at)
