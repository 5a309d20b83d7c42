"""Whether a cabinet is online, and why it changed: transitions with their cause, heartbeat expiry, and
the reconciliation of the full slot state a cabinet announces when it comes back.

A cabinet is online from its birth until its last-will, its clean disconnect, or
`heartbeat_missed_limit` × `heartbeat_interval_s` without a word from it, whichever comes first. Every
transition is one `cabinet_presence` row; swapflow/ops/uptime.py computes uptime from them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.network import Cabinet, CabinetPresence, Slot
from swapflow.db.swaps import CustodyDiscrepancy, SwapOrder
from swapflow.domain.network import CabinetCapability, PresenceCause
from swapflow.domain.swaps import SwapStatus
from swapflow.ops.alerts import raise_alert
from swapflow.protocol.v1 import CabinetState, SlotReport
from swapflow.workflows.swap_contract import FaultReport

DISCREPANCY_ALERT = "custody_discrepancy"
"""Alert kind raised for a pack that moved while its cabinet was offline."""


def offline_cause(state: CabinetState) -> PresenceCause:
    """Why an offline state message was sent: the cabinet's own clean shutdown, or a lost link (its
    last-will, or the offline state a gateway publishes for a link it lost)."""
    return PresenceCause.CLEAN_DISCONNECT if state.reason == "shutdown" else PresenceCause.LAST_WILL


def is_last_will(state: CabinetState) -> bool:
    """Whether the broker sent this state as the cabinet's last-will: offline without a reason. Its
    timestamp is when the will was registered (at connect), not when the link died."""
    return not state.online and state.reason is None


def record_transition(session: AsyncSession, cabinet_id: str, online: bool, cause: PresenceCause, at: datetime) -> None:
    """Add one transition row (the caller has changed `cabinets.online` in the same transaction)."""
    session.add(CabinetPresence(cabinet_id=cabinet_id, online=online, cause=cause, at=at))


async def swaps_in_progress(session: AsyncSession, cabinet_id: str) -> list[str]:
    """Order ids of the swaps running at a cabinet: they are told when it goes on- or offline."""
    return list(
        await session.scalars(
            select(SwapOrder.id).where(SwapOrder.cabinet_id == cabinet_id, SwapOrder.status == SwapStatus.IN_PROGRESS)
        )
    )


async def telemetry_may_revive(session: AsyncSession, cabinet_id: str) -> bool:
    """Whether telemetry alone may bring an offline cabinet online: after a heartbeat expiry, or when no
    transition was ever recorded (its birth went unseen). After a last-will or a clean disconnect only a
    birth does, even if a late telemetry message overtakes it (they travel on different connections)."""
    cause = await session.scalar(
        select(CabinetPresence.cause)
        .where(CabinetPresence.cabinet_id == cabinet_id)
        .order_by(CabinetPresence.at.desc(), CabinetPresence.id.desc())
        .limit(1)
    )
    return cause is None or cause == PresenceCause.HEARTBEAT_EXPIRED


@dataclass(frozen=True)
class Expired:
    """A cabinet marked offline for missed heartbeats, and the swaps running there."""

    cabinet_id: str
    order_ids: list[str]


async def expire_silent_cabinets(
    session: AsyncSession,
    *,
    cutoff: datetime,
    now: datetime,
    spare: Callable[[str], bool] = lambda _: False,
    limit: int = 500,
) -> list[Expired]:
    """Mark offline up to `limit` reporting cabinets last heard before `cutoff` (cause
    heartbeat_expired), except those `spare` names (heard by this adapter more recently than its last
    write shows). A cabinet never heard (no last_seen_at) is left alone: there is no heartbeat to miss."""
    silent = [
        cabinet_id
        for cabinet_id in await session.scalars(
            select(Cabinet.id).where(
                Cabinet.online.is_(True),
                Cabinet.capability == CabinetCapability.REPORTING,
                Cabinet.last_seen_at.is_not(None),
                Cabinet.last_seen_at < cutoff,
            )
        )
        if not spare(cabinet_id)
    ][:limit]
    if not silent:
        return []
    # Guarded on online: a birth handled meanwhile by a second adapter wins.
    await session.execute(update(Cabinet).where(Cabinet.id.in_(silent), Cabinet.online.is_(True)).values(online=False))
    for cabinet_id in silent:
        record_transition(session, cabinet_id, False, PresenceCause.HEARTBEAT_EXPIRED, now)
    swaps: dict[str, list[str]] = {cabinet_id: [] for cabinet_id in silent}
    for order_id, cabinet_id in await session.execute(
        select(SwapOrder.id, SwapOrder.cabinet_id).where(
            SwapOrder.cabinet_id.in_(silent), SwapOrder.status == SwapStatus.IN_PROGRESS
        )
    ):
        swaps[cabinet_id].append(order_id)
    return [Expired(cabinet_id, order_ids) for cabinet_id, order_ids in swaps.items()]


async def record_discrepancy(
    session: AsyncSession,
    cabinet_id: str,
    slot_no: int,
    expected: str | None,
    reported: str | None,
    at: datetime,
    order_id: str | None = None,
) -> bool:
    """Add a custody discrepancy; False when the slot's discrepancy at `at` is recorded already."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    inserted = await session.execute(
        insert(CustodyDiscrepancy)
        .values(
            cabinet_id=cabinet_id,
            slot_no=slot_no,
            expected_serial=expected,
            reported_serial=reported,
            detected_at=at,
            order_id=order_id,
        )
        .on_conflict_do_nothing(index_elements=["cabinet_id", "slot_no", "detected_at"])
        .returning(CustodyDiscrepancy.id)
    )
    return inserted.scalar_one_or_none() is not None


async def reconcile_slots(
    session: AsyncSession, cabinet_id: str, at: datetime, reports: Sequence[SlotReport]
) -> list[CustodyDiscrepancy]:
    """Compare the packs a (re)connecting cabinet announces with custody. A slot that holds another
    pack than custody says (or none, or one where custody has none) is recorded as a discrepancy,
    taken out of swaps and alerted; custody itself is not changed, since only a swap or an operator
    moves a pack. Slots reserved by a running swap are left to it."""
    slots = {s.slot_no: s for s in await session.scalars(select(Slot).where(Slot.cabinet_id == cabinet_id))}
    found = []
    for report in reports:
        slot = slots.get(report.slot_no)
        if slot is None:
            continue
        reported = report.battery.serial if report.battery else None
        slot.reported_serial, slot.reported_at = reported, at  # what `swapflow check` compares with custody
        if slot.reserved_order_id is not None:
            continue
        if reported == slot.battery_serial:
            continue
        if not await record_discrepancy(session, cabinet_id, slot.slot_no, slot.battery_serial, reported, at):
            continue  # this birth was reconciled already (a second adapter)
        message = (
            f"slot {slot.slot_no} of {cabinet_id}: custody says {slot.battery_serial or 'empty'}, the "
            f"cabinet reported {reported or 'empty'} on reconnecting"
        )
        slot.out_of_service = "custody discrepancy"
        await raise_alert(
            session,
            FaultReport(
                kind=DISCREPANCY_ALERT,
                severity="warning",
                cabinet_id=cabinet_id,
                slot_no=slot.slot_no,
                battery_serial=slot.battery_serial or reported,
                message=message,
            ),
        )
        found.append(
            CustodyDiscrepancy(
                cabinet_id=cabinet_id,
                slot_no=slot.slot_no,
                expected_serial=slot.battery_serial,
                reported_serial=reported,
                detected_at=at,
            )
        )
    return found
