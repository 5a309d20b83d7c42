"""The packs' own reports, the only evidence a command-only (legacy) cabinet's swaps leave: batched
like telemetry, checked (a pack may only report itself, see authority.py), routed to the swaps whose
reserved slots they concern, and written as the packs' latest readings. Custody is never changed: only
a swap moves a pack."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.network import Battery, Slot
from swapflow.device_adapter.authority import alert_forgery, forgery, running_swaps
from swapflow.device_adapter.clock import DeviceClock
from swapflow.device_adapter.dead_letters import DeadLetters
from swapflow.device_adapter.ingest import HistoryBuffer, battery_row, history_row, write_battery_readings
from swapflow.device_adapter.metrics import AdapterMetrics, AdapterStats
from swapflow.device_adapter.payloads import Rejected, load_json, parse
from swapflow.device_adapter.signals import SignalSender
from swapflow.device_adapter.storage import Storage
from swapflow.device_adapter.topics import PackRoute
from swapflow.domain.clock import as_utc
from swapflow.protocol.v1 import BatteryTelemetry
from swapflow.workflows.device_contract import DeviceSignal, DeviceSignalKind
from swapflow.workflows.swap_contract import swap_workflow_id

log = logging.getLogger(__name__)

_MAX_PENDING = 50_000  # reports waiting for the next batch write; more are refused
_BATCH = 200  # reports per transaction: each is one small row update
_KIND = "battery_report"  # kind of a battery report in device_messages
_NO_CABINET = "-"  # device_messages.cabinet_id of a report from a pack that is in no cabinet
_MAX_CABINET_ID = 40  # cabinets.id is at most this long


def _parse_report(serial: str, data: Any) -> BatteryTelemetry:
    """A pack's own report, checked against its topic and for a place that is whole."""
    report = parse(BatteryTelemetry, "battery telemetry", data)
    if report.serial != serial:
        raise Rejected(f"payload serial {report.serial!r} does not match topic battery {serial!r}")
    if report.reading.serial != report.serial:
        raise Rejected(f"reading serial {report.reading.serial!r} does not match battery {report.serial!r}")
    if (report.cabinet_id is None) != (report.slot_no is None):
        raise Rejected("invalid battery telemetry payload: cabinet_id and slot_no must be given together")
    if report.cabinet_id is not None and not 0 < len(report.cabinet_id) <= _MAX_CABINET_ID:
        raise Rejected(f"invalid battery telemetry payload: cabinet_id: 1 to {_MAX_CABINET_ID} characters")
    return report


@dataclass(frozen=True)
class _Delivery:
    """One signal a report causes: to the workflow of a reserved slot."""

    workflow_id: str
    signal: DeviceSignal


def _deliveries(
    report: BatteryTelemetry, reserved_at: dict[tuple[str, int], Slot], reserved_holding: dict[str, Slot]
) -> list[_Delivery]:
    """The signals a report causes, from the reserved slots it concerns: the slot it says the pack is in
    (`in_slot=True`), and the slot the database holds the pack in when the report puts it elsewhere or
    nowhere (`in_slot=False`)."""
    at = as_utc(report.ts)
    message_id = f"bat:{report.serial}:{report.seq}"
    place = (report.cabinet_id, report.slot_no) if report.cabinet_id and report.slot_no else None
    deliveries = []
    if place is not None and (slot := reserved_at.get(place)) is not None and slot.reserved_order_id:
        deliveries.append(
            _Delivery(
                swap_workflow_id(slot.reserved_order_id),
                DeviceSignal(
                    message_id=message_id,
                    kind=DeviceSignalKind.BATTERY_REPORT,
                    cabinet_id=slot.cabinet_id,
                    at=at,
                    slot_no=slot.slot_no,
                    battery=report.reading,
                    battery_serial=report.serial,
                    in_slot=True,
                ),
            )
        )
    held = reserved_holding.get(report.serial)
    if held is not None and held.reserved_order_id and (held.cabinet_id, held.slot_no) != place:
        # Its own id: the same report may also have told the same swap the pack is in another of its slots.
        deliveries.append(
            _Delivery(
                swap_workflow_id(held.reserved_order_id),
                DeviceSignal(
                    message_id=f"{message_id}:left",
                    kind=DeviceSignalKind.BATTERY_REPORT,
                    cabinet_id=held.cabinet_id,
                    at=at,
                    slot_no=held.slot_no,
                    battery=report.reading,
                    battery_serial=report.serial,
                    in_slot=False,
                ),
            )
        )
    return deliveries


_PackReport = tuple[str, bytes, dict[str, Any], BatteryTelemetry]
"""A pack's report as received (topic, payload), parsed (JSON, model)."""


@dataclass
class _Outcome:
    """What applying a batch of pack reports did: signals to send, duplicates, the report applied per
    pack, the forgeries (topic, payload, reason) and the reports an applied newer one replaced."""

    routed: list[tuple[str, bytes, _Delivery]]
    duplicates: int
    latest: dict[str, _PackReport]
    forged: list[tuple[str, bytes, str]]
    stale: int


class BatteryReports:
    """The packs' reports waiting for the next batch write, and the highest seq applied per pack."""

    def __init__(
        self,
        storage: Storage,
        clock: DeviceClock,
        history: HistoryBuffer,
        signals: SignalSender,
        dead_letters: DeadLetters,
        metrics: AdapterMetrics,
        stats: AdapterStats,
    ) -> None:
        self._storage = storage
        self._clock = clock
        self._history = history
        self._signals = signals
        self._dead_letters = dead_letters
        self._metrics = metrics
        self._stats = stats
        self._seq: dict[str, int] = {}  # highest report seq applied per pack serial
        self._pending: list[tuple[PackRoute, bytes]] = []  # in arrival order

    def offer(self, route: PackRoute, payload: bytes) -> None:
        """Keep a report for the next batch write, unless too many wait already."""
        if len(self._pending) >= _MAX_PENDING:
            self._dead_letters.reject(route.topic, b"", "battery reports backlog full: dropped")
        else:
            self._pending.append((route, payload))

    async def write_pending(self) -> None:
        """Apply the reports waiting, in batches (their signals go out on their own tasks)."""
        batch, self._pending = self._pending, []
        for start in range(0, len(batch), _BATCH):
            await self.apply(batch[start : start + _BATCH])

    async def apply(self, batch: Sequence[tuple[PackRoute, bytes]]) -> list[asyncio.Task[None]]:
        """Validate a batch of packs' own reports, route those about reserved slots to their swaps and
        write the readings, in one transaction. Returns the signal deliveries it started. Never raises:
        what fails becomes a dead letter."""
        # The newest credible report per pack: a report is a snapshot, and a newer one of the same pack
        # says where it is now. Older ones (in the batch, or behind the watermark) are dropped; a forged
        # one (see authority.py) hides none of them.
        offered: dict[str, list[_PackReport]] = {}
        for route, payload in batch:
            serial, topic = route.serial, route.topic
            try:
                data = load_json(payload)
                report = self._clock.bound_report(_parse_report(serial, data))
            except Rejected as exc:
                self._dead_letters.reject(topic, payload, str(exc))
                continue
            if report.seq <= self._seq.get(serial, -1):
                self._stats.stale += 1
                continue
            offered.setdefault(serial, []).append((topic, payload, data, report))
        if not offered:
            return []

        async def work(session: AsyncSession) -> _Outcome:
            serials = list(offered)
            places = {r.cabinet_id for reports in offered.values() for *_, r in reports if r.cabinet_id}
            batteries = {b.serial: b for b in await session.scalars(select(Battery).where(Battery.serial.in_(serials)))}
            swaps = await running_swaps(session, places)
            latest: dict[str, _PackReport] = {}
            forged: list[tuple[str, bytes, str]] = []
            stale = 0
            for serial, reports in offered.items():
                for topic, payload, data, report in sorted(reports, key=lambda r: r[3].seq, reverse=True):
                    if (forged_because := forgery(report, batteries.get(serial), swaps)) is not None:
                        await alert_forgery(session, report, forged_because)
                        forged.append((topic, payload, forged_because))
                    elif serial in latest:
                        stale += 1
                    else:
                        latest[serial] = (topic, payload, data, report)
            reserved = list(
                await session.scalars(
                    select(Slot).where(
                        Slot.reserved_order_id.is_not(None),
                        or_(Slot.cabinet_id.in_(list(places)), Slot.battery_serial.in_(serials)),
                    )
                )
            )
            reserved_at = {(s.cabinet_id, s.slot_no): s for s in reserved}
            reserved_holding = {s.battery_serial: s for s in reserved if s.battery_serial}
            routed: list[tuple[str, bytes, _Delivery]] = []
            duplicates = 0
            updates = []
            for topic, payload, data, report in latest.values():
                deliveries = _deliveries(report, reserved_at, reserved_holding)
                battery = batteries.get(report.serial)
                # Recorded when a swap hears of it, or when the pack is not ours: the trace an operator
                # follows. Other reports are routine readings, kept only as the pack's latest values.
                if deliveries or battery is None:
                    recorded = await self._storage.record(
                        session,
                        report.cabinet_id or _NO_CABINET,
                        f"bat:{report.serial}:{report.seq}",
                        _KIND,
                        topic,
                        data,
                        deliveries[0].workflow_id if deliveries else None,
                    )
                    if not recorded:
                        duplicates += 1
                        continue
                routed.extend((topic, payload, delivery) for delivery in deliveries)
                if battery is not None:
                    updates.append(battery_row(report.reading, as_utc(report.ts)))
            await write_battery_readings(session, updates)
            return _Outcome(routed, duplicates, latest, forged, stale)

        try:
            outcome = await self._storage.transaction(work)
        except Exception as exc:
            log.exception("failed to apply %d battery reports", sum(map(len, offered.values())))
            for topic, payload, *_ in (report for reports in offered.values() for report in reports):
                self._dead_letters.reject(topic, payload, f"internal error: {exc!r}")
            return []
        routed, latest = outcome.routed, outcome.latest
        self._stats.duplicates += outcome.duplicates
        self._stats.stale += outcome.stale
        for topic, payload, reason in outcome.forged:
            self._metrics.forged_reports.inc()
            self._dead_letters.reject(topic, payload, reason)
        for serial, (*_, report) in latest.items():
            self._seq[serial] = self._clock.bound_seq(report.seq)
        self._history.offer(
            [history_row(r.reading, as_utc(r.ts), r.cabinet_id, r.slot_no) for *_, r in latest.values()], []
        )
        return [
            self._signals.send(delivery.workflow_id, delivery.signal, topic=topic, payload=payload)
            for topic, payload, delivery in routed
        ]
