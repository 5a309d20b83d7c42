"""Telemetry ingestion: cabinet and pack reports into the live tables (latest state) and the history
tables (time series), in batches of Core bulk statements.

Latest state is never shed: a cabinet's pending report is replaced by its newer one, so what waits is
bounded by the number of cabinets. History is bounded explicitly (`HistoryBuffer`): when writing falls
behind, new history rows are shed and counted, and the state and the events go on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.device_adapter.battery_state import charge_state
from swapflow.device_adapter.metrics import AdapterMetrics
from swapflow.protocol.v1 import BatteryReading, SlotReport

log = logging.getLogger(__name__)


class _Bulk:
    """One hot statement of ingestion, run on plain tuples: on SQLite as executemany of driver SQL
    (SQLAlchemy's per-row parameter processing would be most of the cost), on PostgreSQL as a single
    statement over arrays (`unnest`), which spares psycopg a round of work per row."""

    def __init__(self, sqlite_sql: str, postgres_sql: str, pg_types: Sequence[str]) -> None:
        self.sqlite_sql = sqlite_sql
        arrays = ", ".join(f"%s::{t}[]" for t in pg_types)
        self.postgres_sql = postgres_sql.replace("{unnest}", f"unnest({arrays})")

    async def run(self, session: AsyncSession, rows: Sequence[tuple[Any, ...]]) -> None:
        if not rows:
            return
        connection = await session.connection()
        if connection.dialect.name == "postgresql":
            columns = tuple(list(column) for column in zip(*rows, strict=True))
            await connection.exec_driver_sql(self.postgres_sql, columns)
        else:
            await connection.exec_driver_sql(self.sqlite_sql, list(rows))


_F, _I, _T, _TS, _B = "float8", "int4", "text", "timestamptz", "bool"

# Older readings never overwrite newer ones: the guard is in the statement, so it holds across batches,
# adapters and the packs' own reports arriving by the other path.
UPDATE_BATTERY = _Bulk(
    "UPDATE batteries SET soc = ?, soh = ?, voltage_v = ?, temperature_c = ?, cycle_count = ?, current_a = ?, "
    "charge_state = ?, reading_at = ? WHERE serial = ? AND (reading_at IS NULL OR reading_at <= ?)",
    "UPDATE batteries AS b SET soc = v.soc, soh = v.soh, voltage_v = v.voltage_v, temperature_c = v.temperature_c, "
    "cycle_count = v.cycle_count, current_a = v.current_a, charge_state = v.charge_state, reading_at = v.at "
    "FROM {unnest} AS v(soc, soh, voltage_v, temperature_c, cycle_count, current_a, charge_state, at, serial, at2) "
    "WHERE b.serial = v.serial AND (b.reading_at IS NULL OR b.reading_at <= v.at)",
    (_F, _F, _F, _F, _I, _F, _T, _TS, _T, _TS))
UPDATE_SLOT = _Bulk(
    "UPDATE slots SET door = ?, charging = ?, fault = ? WHERE cabinet_id = ? AND slot_no = ?",
    "UPDATE slots AS s SET door = v.door, charging = v.charging, fault = v.fault "
    "FROM {unnest} AS v(door, charging, fault, cabinet_id, slot_no) "
    "WHERE s.cabinet_id = v.cabinet_id AND s.slot_no = v.slot_no",
    (_T, _B, _T, _T, _I))
UPDATE_SLOT_KEEP_DOOR = _Bulk(
    "UPDATE slots SET charging = ?, fault = ? WHERE cabinet_id = ? AND slot_no = ?",
    "UPDATE slots AS s SET charging = v.charging, fault = v.fault FROM {unnest} AS v(charging, fault, cabinet_id, "
    "slot_no) WHERE s.cabinet_id = v.cabinet_id AND s.slot_no = v.slot_no",
    (_B, _T, _T, _I))
UPDATE_LAST_SEEN = _Bulk(
    "UPDATE cabinets SET last_seen_at = ? WHERE id = ? AND (last_seen_at IS NULL OR last_seen_at < ?)",
    "UPDATE cabinets AS c SET last_seen_at = v.at FROM {unnest} AS v(at, id, at2) "
    "WHERE c.id = v.id AND (c.last_seen_at IS NULL OR c.last_seen_at < v.at)",
    (_TS, _T, _TS))
INSERT_READING = _Bulk(
    "INSERT INTO battery_readings (battery_serial, at, soc, soh, voltage_v, current_a, temperature_c, cycle_count, "
    "cabinet_id, slot_no) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "INSERT INTO battery_readings (battery_serial, at, soc, soh, voltage_v, current_a, temperature_c, cycle_count, "
    "cabinet_id, slot_no) SELECT * FROM {unnest}",
    (_T, _TS, _F, _F, _F, _F, _F, _I, _T, _I))
INSERT_HEALTH = _Bulk(
    "INSERT INTO cabinet_health (cabinet_id, at, temperature_c, batteries, charging, faults, doors_open) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)",
    "INSERT INTO cabinet_health (cabinet_id, at, temperature_c, batteries, charging, faults, doors_open) "
    "SELECT * FROM {unnest}",
    (_T, _TS, _F, _I, _I, _I, _I))


def stored_at(session: AsyncSession, value: datetime) -> Any:
    """A UTC timestamp as its column stores it: SQLAlchemy keeps SQLite DATETIMEs as this text."""
    if session.get_bind().dialect.name == "postgresql":
        return value
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")


def battery_row(reading: BatteryReading, at: datetime) -> tuple[Any, ...]:
    """Parameters of the guarded latest-reading update of one pack (`at` is formatted on writing)."""
    return (reading.soc, reading.soh, reading.voltage_v, reading.temperature_c, reading.cycle_count,
            reading.current_a, charge_state(reading.current_a).value, at, reading.serial, at)


def history_row(reading: BatteryReading, at: datetime, cabinet_id: str | None, slot_no: int | None
                ) -> tuple[Any, ...]:
    """One `battery_readings` row."""
    return (reading.serial, at, reading.soc, reading.soh, reading.voltage_v, reading.current_a,
            reading.temperature_c, reading.cycle_count, cabinet_id, slot_no)


def health_row(cabinet_id: str, at: datetime, temperature_c: float | None, slots: Sequence[SlotReport]
               ) -> tuple[Any, ...]:
    """One `cabinet_health` row, summarising a telemetry report."""
    return (cabinet_id, at, temperature_c, sum(1 for s in slots if s.battery is not None),
            sum(1 for s in slots if s.charging), sum(1 for s in slots if s.fault),
            sum(1 for s in slots if s.door == "open"))


@dataclass
class CabinetReport:
    """The latest state one telemetry report (or birth) gives of a cabinet's slots."""

    cabinet_id: str
    at: datetime
    slots: Sequence[SlotReport]
    doors_current: bool = True
    """False when a door event newer than the report has been applied: its door states are stale."""
    write_slots: bool = True
    """False when the slots read exactly as last written (doors, charging, faults rarely change)."""


async def write_latest_state(session: AsyncSession, reports: Sequence[CabinetReport]) -> None:
    """Slot doors, charging and faults, the packs' latest readings and the cabinets' last_seen_at, as
    a few bulk statements. Custody (`slots.battery_serial`) is never touched: only swaps move packs."""
    slot_rows, keep_door_rows, battery_rows, seen_rows = [], [], [], []
    for report in reports:
        at = stored_at(session, report.at)
        seen_rows.append((at, report.cabinet_id, at))
        for slot in report.slots:
            if report.write_slots:
                fault = slot.fault[:100] if slot.fault else None
                if report.doors_current:
                    slot_rows.append((slot.door, slot.charging, fault, report.cabinet_id, slot.slot_no))
                else:
                    keep_door_rows.append((slot.charging, fault, report.cabinet_id, slot.slot_no))
            if slot.battery is not None:
                battery_rows.append(battery_row(slot.battery, at))
    await UPDATE_LAST_SEEN.run(session, seen_rows)
    await UPDATE_SLOT.run(session, slot_rows)
    await UPDATE_SLOT_KEEP_DOOR.run(session, keep_door_rows)
    await UPDATE_BATTERY.run(session, battery_rows)


async def write_battery_readings(session: AsyncSession, rows: Sequence[tuple[Any, ...]]) -> None:
    """The latest readings of packs (their own reports, from `battery_row`), guarded against older ones."""
    await UPDATE_BATTERY.run(session, [(*row[:7], stored_at(session, row[7]), row[8], stored_at(session, row[9]))
                                       for row in rows])


@dataclass
class HistoryBuffer:
    """History rows waiting to be written, bounded: what does not fit is shed (and counted)."""

    limit: int
    metrics: AdapterMetrics
    readings: list[tuple[Any, ...]] = field(default_factory=list)
    health: list[tuple[Any, ...]] = field(default_factory=list)
    _last_warning: float = 0.0

    def __len__(self) -> int:
        return len(self.readings) + len(self.health)

    def offer(self, readings: list[tuple[Any, ...]], health: list[tuple[Any, ...]]) -> None:
        """Queue rows; those beyond the limit are shed (newest first: the backlog is written in order)."""
        room = max(0, self.limit - len(self))
        shed = 0
        if len(readings) > room:
            shed += len(readings) - room
            readings = readings[:room]
        room -= len(readings)
        if len(health) > room:
            shed += len(health) - room
            health = health[:room]
        self.readings.extend(readings)
        self.health.extend(health)
        self.metrics.history_backlog.set(len(self))
        if shed:
            self.metrics.history_shed.inc(shed)
            now = time.monotonic()
            if now - self._last_warning > 10:
                self._last_warning = now
                log.warning("telemetry ingestion is behind: %d history rows waiting; shedding new history rows "
                            "(%d now; latest state and events are unaffected)", len(self), shed)

    def take(self, max_rows: int) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """Up to `max_rows` rows of each kind, oldest first."""
        readings, self.readings = self.readings[:max_rows], self.readings[max_rows:]
        health, self.health = self.health[:max_rows], self.health[max_rows:]
        self.metrics.history_backlog.set(len(self))
        return readings, health


async def write_history(session: AsyncSession, readings: Sequence[tuple[Any, ...]],
                        health: Sequence[tuple[Any, ...]]) -> None:
    """Append history rows (from `history_row` and `health_row`)."""
    await INSERT_READING.run(session, [(r[0], stored_at(session, r[1]), *r[2:]) for r in readings])
    await INSERT_HEALTH.run(session, [(h[0], stored_at(session, h[1]), *h[2:]) for h in health])
