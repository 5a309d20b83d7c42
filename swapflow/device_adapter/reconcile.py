"""A cabinet's battery event that no running swap takes (its swap has ended, or the slot is in none) and
that contradicts custody. Such a fact cannot be dropped: the rider may hold a pack custody puts in a
slot. Custody follows the physical fact, as a recorded custody event; the disagreement is kept as a
`custody_discrepancies` row (naming the ended swap, for finance: docs/money.md) and alerted.

- A pack removed: it goes to the rider of the ended swap that was issuing it, when that rider holds no
  other pack; else to custodian kind `missing`, referring to the slot it left.
- A pack put in: it sits in the slot, but no swap checked it, so it is held in quarantine there and the
  slot is locked; a pack custody had in that slot instead is `missing`.

Each slot also remembers the pack its cabinet last reported in it, which `swapflow check` compares
with custody (swapflow/invariants.py). An event older than that report changes nothing.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.activities.swap import transfer_custody
from swapflow.db.network import Battery, Slot
from swapflow.db.swaps import SwapOrder
from swapflow.device_adapter.presence import record_discrepancy
from swapflow.domain.clock import as_utc
from swapflow.domain.network import BatteryStatus, CustodianKind, slot_ref
from swapflow.domain.swaps import SwapStatus
from swapflow.ops.alerts import LATE_DEVICE_FACT, raise_alert
from swapflow.protocol.v1 import CabinetEvent, EventType
from swapflow.workflows.swap_contract import FaultReport

log = logging.getLogger(__name__)

DISCREPANCY_OUT_OF_SERVICE = "custody discrepancy"


def reported_occupant(event: CabinetEvent) -> tuple[bool, str | None]:
    """Whether the event says what the slot holds now, and which pack (None: empty)."""
    if event.type is EventType.BATTERY_REMOVED:
        return True, None
    if event.type is EventType.BATTERY_INSERTED:
        serial = event.battery.serial if event.battery else event.battery_serial
        return serial is not None, serial
    return False, None


async def reconcile_event(session: AsyncSession, slot: Slot, event: CabinetEvent, at: datetime) -> bool:
    """Note what a battery event says the slot holds and, outside any swap, make custody agree with it.
    True when custody was changed."""
    known, serial = reported_occupant(event)
    if not known or (slot.reported_at is not None and at < as_utc(slot.reported_at)):
        return False
    slot.reported_serial, slot.reported_at = serial, at
    if slot.reserved_order_id is not None or serial == slot.battery_serial:
        return False  # a running swap takes it, or custody already agrees
    expected = slot.battery_serial
    key = _custody_key(slot.cabinet_id, event.event_id)
    order = await _ended_swap(session, slot, serial, expected)
    place = slot_ref(slot.cabinet_id, slot.slot_no)
    if serial is None:
        if expected is None:  # unreachable: custody agreeing with an empty slot returned above
            raise ValueError(f"slot {place} reported empty, and custody holds nothing there to move")
        rider = order.rider_id if order is not None and await _holds_nothing(session, order.rider_id) else None
        await _move(
            session,
            expected,
            CustodianKind.RIDER if rider else CustodianKind.MISSING,
            rider or place,
            f"removed from {place} after its swap ended" if order else f"removed from {place} in no swap",
            key,
            order,
        )
        slot.battery_serial, slot.charging = None, False
        outcome = f"now with rider {rider}" if rider else "now missing"
    else:
        if expected is not None:
            await _move(
                session,
                expected,
                CustodianKind.MISSING,
                place,
                f"{serial} reported in its place {place}",
                f"{key}:displaced",
                order,
            )
            slot.battery_serial = None
        battery = await session.get(Battery, serial)
        if battery is not None:
            await session.flush()  # the slot above gave up the pack before another one takes it (unique serial)
            elsewhere = await session.scalar(select(Slot).where(Slot.battery_serial == serial))
            if elsewhere is not None:
                elsewhere.battery_serial = None
                await session.flush()
            battery.status = BatteryStatus.QUARANTINED
            await _move(
                session,
                serial,
                CustodianKind.QUARANTINE,
                place,
                f"put into {place} outside a swap",
                key,
                order,
                battery,
            )
            slot.battery_serial = serial
        slot.locked, slot.out_of_service = True, DISCREPANCY_OUT_OF_SERVICE
        outcome = "held in quarantine there, slot locked" if battery else "not ours, slot locked"
    await record_discrepancy(session, slot.cabinet_id, slot.slot_no, expected, serial, at, order.id if order else None)
    swap = f" after swap {order.id} ended ({order.status}; charging again is finance's decision)" if order else ""
    message = (
        f"slot {slot.slot_no} of {slot.cabinet_id} reported {serial or 'empty'} where custody had "
        f"{expected or 'none'}{swap}: {outcome}"
    )
    log.warning("%s", message)
    await raise_alert(
        session,
        FaultReport(
            kind=LATE_DEVICE_FACT,
            severity="warning",
            cabinet_id=slot.cabinet_id,
            slot_no=slot.slot_no,
            battery_serial=serial or expected,
            order_id=order.id if order else None,
            message=message,
        ),
    )
    return True


def _custody_key(cabinet_id: str, event_id: str) -> str:
    key = f"event:{cabinet_id}:{event_id}"
    return key if len(key) <= 100 else f"event:{hashlib.sha256(key.encode()).hexdigest()}"


async def _ended_swap(session: AsyncSession, slot: Slot, inserted: str | None, held: str | None) -> SwapOrder | None:
    """The failed swap the event belongs to, the latest at the slot: the one that was issuing the removed
    pack from it, or the one whose rider (still holding the pack put in) was to return it there."""
    if inserted is None:
        match = (SwapOrder.charged_slot_no == slot.slot_no) & (SwapOrder.issued_battery_serial == held)
    else:
        returner = select(Battery.custodian_ref).where(
            Battery.serial == inserted, Battery.custodian_kind == CustodianKind.RIDER
        )
        match = (SwapOrder.return_slot_no == slot.slot_no) & SwapOrder.rider_id.in_(returner)
    return await session.scalar(
        select(SwapOrder)
        .where(SwapOrder.cabinet_id == slot.cabinet_id, SwapOrder.status == SwapStatus.FAILED, match)
        .order_by(SwapOrder.finished_at.desc())
        .limit(1)
    )


async def _holds_nothing(session: AsyncSession, rider_id: str) -> bool:
    return (
        await session.scalar(
            select(Battery.serial)
            .where(Battery.custodian_kind == CustodianKind.RIDER, Battery.custodian_ref == rider_id)
            .limit(1)
        )
        is None
    )


async def _move(
    session: AsyncSession,
    serial: str,
    kind: CustodianKind,
    ref: str,
    reason: str,
    key: str,
    order: SwapOrder | None,
    battery: Battery | None = None,
) -> None:
    battery = battery or await session.get(Battery, serial)
    if battery is None:
        return
    await transfer_custody(
        session, battery, to_kind=kind, to_ref=ref, reason=reason[:200], key=key, order_id=order.id if order else None
    )
