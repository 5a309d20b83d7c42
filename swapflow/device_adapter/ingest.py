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


_F, _I, _T, _TS, _B = "float8", "int4", "text", "timestamptz", "bool"


class _Bulk:
    """One hot statement of ingestion, run on plain tuples. On SQLite: executemany of driver SQL
    (SQLAlchemy's per-row parameter processing would be most of the cost). On PostgreSQL: the rows go
    in by binary COPY, which psycopg formats in C (array parameters were formatted element by element
    in Python, a quarter of the adapter's time; text COPY spends ten times binary's on timestamps and
    floats): straight into the table for history, or into a temporary staging table that one
    set-based statement applies to the live table."""

    def __init__(
        self,
        name: str,
        columns: Sequence[tuple[str, str]],
        sqlite_sql: str | None = None,
        postgres_sql: str | None = None,
    ) -> None:
        """`columns` name the rows' fields and their PostgreSQL types, in order. Without statements the
        rows are inserted into table `name` as they are; otherwise `sqlite_sql` applies one row and
        `postgres_sql` the staged rows, read as `v` after its `{staged}` prefix."""
        self._types = [kind for _, kind in columns]
        self._timestamps = [i for i, (_, kind) in enumerate(columns) if kind == _TS]
        names = ", ".join(column for column, _ in columns)
        self.sqlite_sql = sqlite_sql or f"INSERT INTO {name} ({names}) VALUES ({', '.join('?' for _ in columns)})"
        self._prepare: str | None = None
        self._apply: str | None = None
        if postgres_sql is None:
            self._copy = f"COPY {name} ({names}) FROM STDIN (FORMAT BINARY)"
            return
        stage = f"swapflow_stage_{name}"
        # Lives as long as the connection, emptied at commit; IF NOT EXISTS makes it one cheap round trip
        # after the connection's first use, and a rolled-back creation is simply made again.
        self._prepare = (
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} "
            f"({', '.join(f'{column} {kind}' for column, kind in columns)}) ON COMMIT DELETE ROWS"
        )
        self._copy = f"COPY {stage} ({names}) FROM STDIN (FORMAT BINARY)"
        # The staged rows are deleted as they are read: a second run in the same transaction starts empty.
        self._apply = postgres_sql.replace("{staged}", f"WITH v AS (DELETE FROM {stage} RETURNING *)")

    async def run(self, session: AsyncSession, rows: Sequence[tuple[Any, ...]]) -> None:
        """Apply `rows` within the session's transaction."""
        if not rows:
            return
        connection = await session.connection()
        if connection.dialect.name != "postgresql":
            await connection.exec_driver_sql(self.sqlite_sql, [self._sqlite_row(row) for row in rows])
            return
        raw = (await connection.get_raw_connection()).driver_connection
        if raw is None:
            raise RuntimeError("the checked-out database connection has no driver connection to COPY through")
        async with raw.cursor() as cursor:
            if self._prepare is not None:
                await cursor.execute(self._prepare)
            async with cursor.copy(self._copy) as copy:
                copy.set_types(self._types)
                for row in rows:
                    await copy.write_row(row)
            if self._apply is not None:
                await cursor.execute(self._apply)

    def _sqlite_row(self, row: tuple[Any, ...]) -> tuple[Any, ...]:
        """`row` with its (UTC) timestamps as SQLAlchemy stores SQLite DATETIMEs: text, which the guards
        compare."""
        if not self._timestamps:
            return row
        values = list(row)
        for i in self._timestamps:
            values[i] = values[i].strftime("%Y-%m-%d %H:%M:%S.%f")
        return tuple(values)


# Older readings never overwrite newer ones: the guard is in the statement, so it holds across batches,
# adapters and the packs' own reports arriving by the other path. (SQLite's ?N reuses a parameter.)
UPDATE_BATTERY = _Bulk(
    "battery",
    (
        ("soc", _F),
        ("soh", _F),
        ("voltage_v", _F),
        ("temperature_c", _F),
        ("cycle_count", _I),
        ("current_a", _F),
        ("charge_state", _T),
        ("at", _TS),
        ("serial", _T),
    ),
    "UPDATE batteries SET soc = ?1, soh = ?2, voltage_v = ?3, temperature_c = ?4, cycle_count = ?5, current_a = ?6, "
    "charge_state = ?7, reading_at = ?8 WHERE serial = ?9 AND (reading_at IS NULL OR reading_at <= ?8)",
    "{staged} UPDATE batteries AS b SET soc = v.soc, soh = v.soh, voltage_v = v.voltage_v, "
    "temperature_c = v.temperature_c, cycle_count = v.cycle_count, current_a = v.current_a, "
    "charge_state = v.charge_state, reading_at = v.at "
    "FROM v WHERE b.serial = v.serial AND (b.reading_at IS NULL OR b.reading_at <= v.at)",
)
# On PostgreSQL a slot that reads as stored is left alone: an UPDATE writes a new row version even when
# nothing changes, and after an adapter restart (which forgets what it wrote) every slot of every
# cabinet would be rewritten once. SQLite rewrites a row in place, so its statements need no guard.
UPDATE_SLOT = _Bulk(
    "slot",
    (("door", _T), ("charging", _B), ("fault", _T), ("cabinet_id", _T), ("slot_no", _I)),
    "UPDATE slots SET door = ?, charging = ?, fault = ? WHERE cabinet_id = ? AND slot_no = ?",
    "{staged} UPDATE slots AS s SET door = v.door, charging = v.charging, fault = v.fault "
    "FROM v WHERE s.cabinet_id = v.cabinet_id AND s.slot_no = v.slot_no "
    "AND (s.door, s.charging, s.fault) IS DISTINCT FROM (v.door, v.charging, v.fault)",
)
UPDATE_SLOT_KEEP_DOOR = _Bulk(
    "slot_keep_door",
    (("charging", _B), ("fault", _T), ("cabinet_id", _T), ("slot_no", _I)),
    "UPDATE slots SET charging = ?, fault = ? WHERE cabinet_id = ? AND slot_no = ?",
    "{staged} UPDATE slots AS s SET charging = v.charging, fault = v.fault "
    "FROM v WHERE s.cabinet_id = v.cabinet_id AND s.slot_no = v.slot_no "
    "AND (s.charging, s.fault) IS DISTINCT FROM (v.charging, v.fault)",
)
UPDATE_LAST_SEEN = _Bulk(
    "last_seen",
    (("at", _TS), ("id", _T)),
    "UPDATE cabinets SET last_seen_at = ?1 WHERE id = ?2 AND (last_seen_at IS NULL OR last_seen_at < ?1)",
    "{staged} UPDATE cabinets AS c SET last_seen_at = v.at "
    "FROM v WHERE c.id = v.id AND (c.last_seen_at IS NULL OR c.last_seen_at < v.at)",
)
INSERT_READING = _Bulk(
    "battery_readings",
    (
        ("battery_serial", _T),
        ("at", _TS),
        ("soc", _F),
        ("soh", _F),
        ("voltage_v", _F),
        ("current_a", _F),
        ("temperature_c", _F),
        ("cycle_count", _I),
        ("cabinet_id", _T),
        ("slot_no", _I),
    ),
)
INSERT_HEALTH = _Bulk(
    "cabinet_health",
    (
        ("cabinet_id", _T),
        ("at", _TS),
        ("temperature_c", _F),
        ("batteries", _I),
        ("charging", _I),
        ("faults", _I),
        ("doors_open", _I),
    ),
)


def battery_row(reading: BatteryReading, at: datetime) -> tuple[Any, ...]:
    """Parameters of the guarded latest-reading update of one pack."""
    return (
        reading.soc,
        reading.soh,
        reading.voltage_v,
        reading.temperature_c,
        reading.cycle_count,
        reading.current_a,
        charge_state(reading.current_a).value,
        at,
        reading.serial,
    )


def history_row(reading: BatteryReading, at: datetime, cabinet_id: str | None, slot_no: int | None) -> tuple[Any, ...]:
    """One `battery_readings` row."""
    return (
        reading.serial,
        at,
        reading.soc,
        reading.soh,
        reading.voltage_v,
        reading.current_a,
        reading.temperature_c,
        reading.cycle_count,
        cabinet_id,
        slot_no,
    )


def health_row(
    cabinet_id: str, at: datetime, temperature_c: float | None, slots: Sequence[SlotReport]
) -> tuple[Any, ...]:
    """One `cabinet_health` row, summarising a telemetry report."""
    return (
        cabinet_id,
        at,
        temperature_c,
        sum(1 for s in slots if s.battery is not None),
        sum(1 for s in slots if s.charging),
        sum(1 for s in slots if s.fault),
        sum(1 for s in slots if s.door == "open"),
    )


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
        at = report.at
        seen_rows.append((at, report.cabinet_id))
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
    await UPDATE_BATTERY.run(session, rows)


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
                log.warning(
                    "telemetry ingestion is behind: %d history rows waiting; shedding new history rows "
                    "(%d now; latest state and events are unaffected)",
                    len(self),
                    shed,
                )

    def take(self, max_rows: int) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """Up to `max_rows` rows of each kind, oldest first."""
        readings, self.readings = self.readings[:max_rows], self.readings[max_rows:]
        health, self.health = self.health[:max_rows], self.health[max_rows:]
        self.metrics.history_backlog.set(len(self))
        return readings, health


async def write_history(
    session: AsyncSession, readings: Sequence[tuple[Any, ...]], health: Sequence[tuple[Any, ...]]
) -> None:
    """Append history rows (from `history_row` and `health_row`)."""
    await INSERT_READING.run(session, readings)
    await INSERT_HEALTH.run(session, health)
