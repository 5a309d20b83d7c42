"""Who may speak for a pack. A pack in a cabinet reports through that cabinet, and the broker lets every
cabinet publish on battery topics (it cannot know which packs sit in which slots), so a cabinet could
report any pack anywhere, and a command-only cabinet's swap takes those reports as its evidence. A
report that places a pack in a cabinet is believed only when that cabinet holds the pack (custody) or
runs a swap involving it (the rider's pack coming back, the charged pack going out); anything else is a
forgery: dead-lettered, alerted, and it changes nothing (no reading, no signal, no watermark).

A pack that is not ours is no one's to forge: its report reaches the swap whose slot it names, which
quarantines it. A report placing a pack in no cabinet comes from the pack's own modem, through no
cabinet; the swap asks a second fact of it (swapflow/workflows/swap.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.network import Battery
from swapflow.db.swaps import SwapOrder
from swapflow.domain.network import CustodianKind
from swapflow.domain.swaps import SwapStatus
from swapflow.ops.alerts import FORGED_PACK_REPORT, raise_alert
from swapflow.protocol.v1 import BatteryTelemetry
from swapflow.workflows.swap_contract import FaultReport

_HELD_IN_SLOTS = frozenset({CustodianKind.SLOT, CustodianKind.QUARANTINE})


@dataclass(frozen=True)
class SwapParties:
    """What a running swap at a cabinet involves: the rider (whose pack comes back) and the packs named."""

    rider_id: str
    serials: frozenset[str]


async def running_swaps(session: AsyncSession, cabinet_ids: Iterable[str]) -> dict[str, list[SwapParties]]:
    """The swaps in progress at each of the cabinets."""
    swaps: dict[str, list[SwapParties]] = {}
    ids = list(set(cabinet_ids))
    if not ids:
        return swaps
    for cabinet_id, rider_id, issued, returned in await session.execute(
        select(
            SwapOrder.cabinet_id, SwapOrder.rider_id, SwapOrder.issued_battery_serial, SwapOrder.returned_battery_serial
        ).where(SwapOrder.cabinet_id.in_(ids), SwapOrder.status == SwapStatus.IN_PROGRESS)
    ):
        serials = frozenset(s for s in (issued, returned) if s)
        swaps.setdefault(cabinet_id, []).append(SwapParties(rider_id, serials))
    return swaps


def forgery(report: BatteryTelemetry, battery: Battery | None, swaps: Mapping[str, list[SwapParties]]) -> str | None:
    """Why the report cannot have come through the cabinet it names, or None when it may have."""
    cabinet_id = report.cabinet_id
    if cabinet_id is None or battery is None:
        return None
    if battery.custodian_kind in _HELD_IN_SLOTS and battery.custodian_ref.split("/", 1)[0] == cabinet_id:
        return None
    for swap in swaps.get(cabinet_id, []):
        riders = battery.custodian_kind == CustodianKind.RIDER and battery.custodian_ref == swap.rider_id
        if riders or battery.serial in swap.serials:
            return None
    return (
        f"{FORGED_PACK_REPORT}: {battery.serial} reported in {cabinet_id} slot {report.slot_no}, but it is "
        f"held by {battery.custodian_kind} {battery.custodian_ref} and no swap there involves it"
    )


async def alert_forgery(session: AsyncSession, report: BatteryTelemetry, reason: str) -> None:
    """One open alert per cabinet and pack; repeats count occurrences."""
    await raise_alert(
        session,
        FaultReport(
            kind=FORGED_PACK_REPORT,
            severity="critical",
            cabinet_id=report.cabinet_id or "-",
            slot_no=report.slot_no,
            battery_serial=report.serial,
            message=reason,
        ),
    )
