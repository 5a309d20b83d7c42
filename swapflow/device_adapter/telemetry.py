"""Telemetry batching: each report is validated as it arrives, and each cabinet's latest waits for the
next batch write (a newer one replaces it, an older one is dropped); a batch writes the cabinets' live
state in one short transaction, queues their readings for the history writer, and brings back online a
cabinet heard again after its heartbeats expired. It remembers what it wrote, so unchanged slots are
not written again, and the highest seq applied per cabinet."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.base import table_of
from swapflow.db.network import Cabinet
from swapflow.device_adapter.clock import DeviceClock
from swapflow.device_adapter.ingest import CabinetReport, HistoryBuffer, health_row, history_row, write_latest_state
from swapflow.device_adapter.metrics import AdapterMetrics
from swapflow.device_adapter.payloads import Rejected, check_cabinet_id, parse_json
from swapflow.device_adapter.presence import reconcile_slots, record_transition, swaps_in_progress, telemetry_may_revive
from swapflow.device_adapter.signals import DeadLetterSink, SignalSender
from swapflow.device_adapter.storage import Storage
from swapflow.device_adapter.topics import CabinetRoute
from swapflow.domain.clock import as_utc, utcnow
from swapflow.domain.network import PresenceCause
from swapflow.protocol.v1 import Channel, Telemetry
from swapflow.workflows.device_contract import DeviceSignal, DeviceSignalKind
from swapflow.workflows.swap_contract import swap_workflow_id

log = logging.getLogger(__name__)

_TELEMETRY_BATCH = 200  # cabinets per transaction: short transactions keep SQLite's writer lock free
# PostgreSQL takes bigger batches, several at once (each batch holds other cabinets, so they never
# contend), committed without waiting for the WAL flush: telemetry repeats, a lost last second costs
# nothing, and the fsync per commit would otherwise bound ingestion.
_PG_TELEMETRY_BATCH = 1000
_PG_TELEMETRY_WRITERS = 3
_AFTER_WILL = math.inf  # seq watermark after a last-will: buffered telemetry must not revive the cabinet


@dataclass(eq=False)
class TelemetryBatch:
    """Pending telemetry and what was applied of it. `dead_letter` keeps a report that cannot be accepted
    or applied, `on_stale` counts a report dropped as old."""

    clock: DeviceClock
    metrics: AdapterMetrics
    history: HistoryBuffer
    signals: SignalSender
    storage: Storage
    dead_letter: DeadLetterSink
    _: KW_ONLY
    on_stale: Callable[[], None]
    # Highest telemetry seq applied per cabinet; reset by a birth, blocked by a last-will.
    _seq: dict[str, float] = field(default_factory=dict, init=False)
    # Time of the latest door event per cabinet: older telemetry must not undo the door it reported.
    _event_at: dict[str, datetime] = field(default_factory=dict, init=False)
    # Latest telemetry per cabinet waiting for the next batch write (newer replaces older).
    _pending: dict[str, tuple[str, bytes, Telemetry]] = field(default_factory=dict, init=False)
    # The slot states last written per cabinet: unchanged slots are not written again. Anything else
    # that writes a cabinet's slots forgets them and bumps its count here, so a telemetry write that
    # ran meanwhile does not remember states the database no longer holds.
    _written: dict[str, tuple[tuple[Any, ...], ...]] = field(default_factory=dict, init=False)
    _touched: dict[str, int] = field(default_factory=dict, init=False)

    def receive(self, route: CabinetRoute, payload: bytes) -> None:
        """Validate a report as it arrives (a bad one is never hidden by a later one) and keep it as its
        cabinet's pending one unless it is older than what is pending or applied."""
        try:
            telemetry = parse_json(Telemetry, Channel.TELEMETRY.value, payload)
            check_cabinet_id(route.cabinet_id, telemetry.cabinet_id)
            telemetry = self.clock.bound_report(telemetry)
        except Rejected as exc:
            self.dead_letter(route.topic, payload, str(exc))
            return
        self._offer(route.cabinet_id, route.topic, payload, telemetry)

    def _offer(self, cabinet_id: str, topic: str, payload: bytes, telemetry: Telemetry) -> None:
        pending = self._pending.get(cabinet_id)
        newest = max(self._seq.get(cabinet_id, -1), pending[2].seq if pending else -1)
        if telemetry.seq <= newest:
            self.on_stale()
            self.metrics.telemetry_stale.inc()
            return
        self._pending[cabinet_id] = (topic, payload, telemetry)

    def new_session(self, cabinet_id: str) -> None:
        """A birth: the cabinet's new session may restart its seq."""
        self._seq.pop(cabinet_id, None)

    def last_will(self, cabinet_id: str) -> None:
        """The cabinet went away: telemetry still buffered must not bring it back."""
        self._seq[cabinet_id] = _AFTER_WILL

    def door_event(self, cabinet_id: str, at: datetime) -> None:
        """A door event at `at`: older telemetry must not undo the door it reported."""
        self._event_at[cabinet_id] = max(at, self._event_at.get(cabinet_id, at))

    def forget_slots(self, cabinet_id: str) -> None:
        """The cabinet's slots were written by something other than telemetry: the next telemetry writes them."""
        self._written.pop(cabinet_id, None)
        self._touched[cabinet_id] = self._touched.get(cabinet_id, 0) + 1

    async def write_pending(self) -> None:
        """Write the pending reports: in batches one after the other on SQLite, several at once on
        PostgreSQL."""
        batch, self._pending = list(self._pending.values()), {}
        size = _PG_TELEMETRY_BATCH if self.storage.postgres else _TELEMETRY_BATCH
        chunks = [batch[start : start + size] for start in range(0, len(batch), size)]
        if not self.storage.postgres:
            for chunk in chunks:
                await self._apply(chunk)
            return
        writers = asyncio.Semaphore(_PG_TELEMETRY_WRITERS)

        async def write(chunk: list[tuple[str, bytes, Telemetry]]) -> None:
            async with writers:
                await self._apply(chunk)

        await asyncio.gather(*(write(chunk) for chunk in chunks))

    async def _apply(self, batch: Sequence[tuple[str, bytes, Telemetry]]) -> None:
        """Write the latest state of a batch of cabinets' (validated, fresh) telemetry in one
        transaction, and queue their readings for the history writer."""
        fresh = {telemetry.cabinet_id: (topic, payload, telemetry) for topic, payload, telemetry in batch}
        if not fresh:
            return
        written = {
            cabinet_id: tuple((r.slot_no, r.door, r.charging, r.fault) for r in telemetry.slots)
            for cabinet_id, (_, _, telemetry) in fresh.items()
        }
        touched = {cabinet_id: self._touched.get(cabinet_id, 0) for cabinet_id in fresh}

        async def work(session: AsyncSession) -> tuple[set[str], list[tuple[str, datetime, list[str]]]]:
            await self.storage.relaxed_commit(session)
            online = dict(
                (await session.execute(select(Cabinet.id, Cabinet.online).where(Cabinet.id.in_(list(fresh)))))
                .tuples()
                .all()
            )
            reports, revived = [], []
            for cabinet_id, (_, _, telemetry) in fresh.items():
                if cabinet_id not in online:
                    continue
                at = as_utc(telemetry.ts)
                reports.append(
                    CabinetReport(
                        cabinet_id,
                        at,
                        telemetry.slots,
                        doors_current=at >= self._event_at.get(cabinet_id, at),
                        write_slots=self._written.get(cabinet_id) != written[cabinet_id],
                    )
                )
                if not online[cabinet_id] and await telemetry_may_revive(session, cabinet_id):
                    # Heard again after its heartbeats expired, on the same connection (no new birth):
                    # online again, and its full slot state is checked against custody as a birth's is.
                    # Guarded, so a birth committed meanwhile (PostgreSQL runs both at once) wins.
                    revive = await session.execute(
                        table_of(Cabinet)
                        .update()
                        .where(Cabinet.id == cabinet_id, Cabinet.online.is_(False))
                        .values(online=True)
                    )
                    if not revive.rowcount:  # type: ignore[attr-defined]
                        continue
                    record_transition(session, cabinet_id, True, PresenceCause.TELEMETRY, at)
                    await reconcile_slots(session, cabinet_id, at, telemetry.slots)
                    revived.append((cabinet_id, at, await swaps_in_progress(session, cabinet_id)))
            await write_latest_state(session, reports)
            return set(fresh) - set(online), revived

        try:
            unknown, revived = await self.storage.transaction(work)
        except Exception:
            # Telemetry repeats every few seconds; losing one batch costs nothing but freshness.
            log.exception("failed to write telemetry of %d cabinets", len(fresh))
            return
        now = utcnow()
        readings: list[tuple[Any, ...]] = []
        health: list[tuple[Any, ...]] = []
        for cabinet_id, (topic, payload, telemetry) in fresh.items():
            if cabinet_id in unknown:
                self.dead_letter(topic, payload, f"unknown cabinet {cabinet_id!r}")
                continue
            self._seq[cabinet_id] = self.clock.bound_seq(telemetry.seq)
            if self._touched.get(cabinet_id, 0) == touched[cabinet_id]:
                self._written[cabinet_id] = written[cabinet_id]
            at = as_utc(telemetry.ts)
            self.metrics.ingest_lag.observe(max(0.0, (now - at).total_seconds()))
            readings.extend(history_row(r.battery, at, cabinet_id, r.slot_no) for r in telemetry.slots if r.battery)
            health.append(health_row(cabinet_id, at, telemetry.cabinet_temperature_c, telemetry.slots))
        self.history.offer(readings, health)
        for cabinet_id, at, order_ids in revived:
            self.metrics.presence_transitions.labels(PresenceCause.TELEMETRY.value).inc()
            message_id = f"state:{DeviceSignalKind.CABINET_ONLINE.value}:telemetry:{at.isoformat()}"[:80]
            signal = DeviceSignal(
                message_id=message_id, kind=DeviceSignalKind.CABINET_ONLINE, cabinet_id=cabinet_id, at=at
            )
            topic, payload, _ = fresh[cabinet_id]
            for order_id in order_ids:
                self.signals.send(swap_workflow_id(order_id), signal, topic=topic, payload=payload)
