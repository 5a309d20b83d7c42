"""The alert rules, evaluated on live state: each returns the conditions that hold now. An alert opens
when its condition first holds (one open alert per device and kind: the alert's dedupe key), and
resolves itself once the condition no longer holds. Thresholds come from the settings (`ops_*`).

Swaps raise some of these alerts themselves the moment they hit the fault (door_fault,
battery_quarantined); the rules use the same keys, so those alerts also resolve when cleared.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.devices import DeadLetter, DeviceCommand
from swapflow.db.network import Battery, Cabinet, CabinetPresence, City, Slot, Station
from swapflow.db.ops import Alert
from swapflow.domain.clock import as_utc, utcnow
from swapflow.domain.network import BatteryStatus, CabinetCapability, CustodianKind
from swapflow.domain.ops import AlertStatus
from swapflow.ops.alerts import DEVICE_FLOOD
from swapflow.protocol.v1 import parse_cabinet_topic
from swapflow.settings import Settings

RULE_KINDS = (
    "cabinet_offline",
    "door_fault",
    "door_no_ack",
    "slot_fault",
    "battery_over_temperature",
    "battery_voltage",
    "battery_quarantined",
    "no_ready_battery",
    "ingest_lag",
    DEVICE_FLOOD,
)
"""The kinds the rules own: an open alert of one of them resolves when its condition is gone."""

DOOR_ACTIONS = ("open_door", "close_door")


@dataclass(frozen=True)
class Condition:
    """Something that holds now and deserves an alert."""

    kind: str
    severity: str
    message: str
    cabinet_id: str | None = None
    slot_no: int | None = None
    battery_serial: str | None = None

    @property
    def key(self) -> str:
        """The same key `swapflow.ops.alerts.alert_key` gives a swap's report of the same problem."""
        return ":".join(
            str(p) for p in (self.kind, self.cabinet_id or "-", self.slot_no or "-", self.battery_serial or "-")
        )


def _split_ref(ref: str) -> tuple[str, int | None]:
    cabinet_id, _, slot = ref.rpartition("/")
    return cabinet_id, int(slot) if slot.isdigit() else None


async def offline_cabinets(session: AsyncSession, settings: Settings, now: datetime) -> list[Condition]:
    """Reporting cabinets that were seen once and have been offline for longer than the threshold."""
    went_offline = (
        select(CabinetPresence.cabinet_id, func.max(CabinetPresence.at).label("at"))
        .where(CabinetPresence.online.is_(False))
        .group_by(CabinetPresence.cabinet_id)
        .subquery()
    )
    rows = await session.execute(
        select(Cabinet.id, Cabinet.last_seen_at, went_offline.c.at)
        .outerjoin(went_offline, went_offline.c.cabinet_id == Cabinet.id)
        .where(
            Cabinet.online.is_(False),
            Cabinet.capability == CabinetCapability.REPORTING,
            Cabinet.last_seen_at.is_not(None),
        )
    )
    found = []
    for cabinet_id, last_seen, offline_at in rows.tuples():
        since = as_utc(offline_at or last_seen)
        if (now - since).total_seconds() >= settings.ops.offline_alert_after_s:
            found.append(
                Condition(
                    "cabinet_offline",
                    "critical",
                    f"cabinet {cabinet_id} offline since {since.isoformat(timespec='seconds')}",
                    cabinet_id,
                )
            )
    return found


async def slot_problems(session: AsyncSession) -> list[Condition]:
    """Slots taken out of service for a door that failed, and slots whose cabinet reports a fault
    (charger, lock). A slot holding a quarantined pack is the quarantine rule's."""
    rows = await session.execute(
        select(Slot.cabinet_id, Slot.slot_no, Slot.out_of_service, Slot.fault, Battery.status)
        .outerjoin(Battery, Battery.serial == Slot.battery_serial)
        .where((Slot.out_of_service.is_not(None)) | (Slot.fault.is_not(None)))
    )
    found = []
    for cabinet_id, slot_no, out_of_service, fault, battery_status in rows.tuples():
        if out_of_service and battery_status != BatteryStatus.QUARANTINED:
            found.append(
                Condition(
                    "door_fault", "warning", f"slot {slot_no} out of service: {out_of_service}", cabinet_id, slot_no
                )
            )
        if fault:
            found.append(Condition("slot_fault", "warning", f"slot {slot_no} reports {fault}", cabinet_id, slot_no))
    return found


async def unacknowledged_doors(session: AsyncSession, settings: Settings, now: datetime) -> list[Condition]:
    """Door commands past their deadline without an ack, on online reporting cabinets, with no later
    acknowledged command to the same slot (which would show the door answers again)."""
    since = now - timedelta(seconds=settings.ops.no_ack_lookback_s)
    last_ack = (
        select(DeviceCommand.cabinet_id, DeviceCommand.slot_no, func.max(DeviceCommand.sent_at).label("at"))
        .where(DeviceCommand.acked_at.is_not(None))
        .group_by(DeviceCommand.cabinet_id, DeviceCommand.slot_no)
        .subquery()
    )
    rows = await session.execute(
        select(
            DeviceCommand.cabinet_id,
            DeviceCommand.slot_no,
            func.count(),
            func.max(DeviceCommand.sent_at),
            func.max(last_ack.c.at),
        )
        .join(Cabinet, Cabinet.id == DeviceCommand.cabinet_id)
        .join(Slot, and_(Slot.cabinet_id == DeviceCommand.cabinet_id, Slot.slot_no == DeviceCommand.slot_no))
        .outerjoin(
            last_ack,
            and_(last_ack.c.cabinet_id == DeviceCommand.cabinet_id, last_ack.c.slot_no == DeviceCommand.slot_no),
        )
        .where(
            DeviceCommand.action.in_(DOOR_ACTIONS),
            DeviceCommand.acked_at.is_(None),
            DeviceCommand.deadline_at < now,
            DeviceCommand.sent_at >= since,
            Cabinet.online.is_(True),
            Cabinet.capability == CabinetCapability.REPORTING,
            Slot.out_of_service.is_(None),
        )
        .group_by(DeviceCommand.cabinet_id, DeviceCommand.slot_no)
    )
    found = []
    for cabinet_id, slot_no, missed, last_missed, acked_at in rows.tuples():
        if acked_at is None or as_utc(acked_at) < as_utc(last_missed):
            found.append(
                Condition(
                    "door_no_ack",
                    "warning",
                    f"slot {slot_no}: {missed} door command(s) not acknowledged",
                    cabinet_id,
                    slot_no,
                )
            )
    return found


async def battery_problems(session: AsyncSession, settings: Settings) -> list[Condition]:
    """Packs in cabinets that run hot or out of their voltage range, and packs quarantined in a slot."""
    rows = await session.scalars(
        select(Battery).where(
            ((Battery.custodian_kind == CustodianKind.SLOT) & (Battery.status == BatteryStatus.IN_SERVICE))
            | (Battery.custodian_kind == CustodianKind.QUARANTINE)
        )
    )
    found = []
    for battery in rows:
        cabinet_id, slot_no = _split_ref(battery.custodian_ref)
        if battery.custodian_kind == CustodianKind.QUARANTINE:
            found.append(
                Condition(
                    "battery_quarantined",
                    "critical",
                    f"pack {battery.serial} quarantined in slot {slot_no}",
                    cabinet_id,
                    slot_no,
                    battery.serial,
                )
            )
            continue
        limits = settings.swap.battery_limits.get(battery.model, settings.swap.default_battery_limits)
        if battery.temperature_c > limits.max_temperature_c:
            found.append(
                Condition(
                    "battery_over_temperature",
                    "critical",
                    f"pack {battery.serial} at {battery.temperature_c} °C (max {limits.max_temperature_c})",
                    cabinet_id,
                    slot_no,
                    battery.serial,
                )
            )
        if not limits.min_voltage_v <= battery.voltage_v <= limits.max_voltage_v:
            found.append(
                Condition(
                    "battery_voltage",
                    "warning",
                    f"pack {battery.serial} at {battery.voltage_v} V "
                    f"(range {limits.min_voltage_v}-{limits.max_voltage_v})",
                    cabinet_id,
                    slot_no,
                    battery.serial,
                )
            )
    return found


def _before_peak(settings: Settings, timezone: str, now: datetime) -> bool:
    hours, minutes = (int(part) for part in settings.ops.evening_peak_start.split(":"))
    local = now.astimezone(ZoneInfo(timezone))
    peak = local.replace(hour=hours, minute=minutes, second=0, microsecond=0)
    return peak - timedelta(minutes=settings.ops.peak_lead_minutes) <= local < peak


async def empty_before_peak(session: AsyncSession, settings: Settings, now: datetime) -> list[Condition]:
    """Online reporting cabinets without a ready pack in the run-up to their city's evening peak."""
    cities = [c.code for c in await session.scalars(select(City)) if _before_peak(settings, c.timezone, now)]
    if not cities:
        return []
    ready = and_(
        Slot.reserved_order_id.is_(None),
        Slot.reservation_id.is_(None),
        Slot.locked.is_(False),
        Slot.fault.is_(None),
        Slot.out_of_service.is_(None),
        Battery.status == BatteryStatus.IN_SERVICE,
        Battery.soc >= settings.swap.ready_soc_threshold,
        Battery.soh >= settings.swap.min_soh,
    )
    rows = await session.execute(
        select(Cabinet.id, func.coalesce(func.sum(case((ready, 1), else_=0)), 0))
        .join(Station, Station.id == Cabinet.station_id)
        .outerjoin(Slot, Slot.cabinet_id == Cabinet.id)
        .outerjoin(Battery, Battery.serial == Slot.battery_serial)
        .where(
            Station.city_code.in_(cities), Cabinet.online.is_(True), Cabinet.capability == CabinetCapability.REPORTING
        )
        .group_by(Cabinet.id)
    )
    return [
        Condition(
            "no_ready_battery", "warning", f"cabinet {cabinet_id} has no ready pack before the evening peak", cabinet_id
        )
        for cabinet_id, n in rows.tuples()
        if not n
    ]


async def ingest_lag_s(session: AsyncSession, now: datetime) -> float | None:
    """How far behind the platform's view of the devices is: the age of the freshest report of any
    cabinet it believes online. The input of the ingest-lag rule; the device network's own metric can
    replace it here."""
    newest = await session.scalar(
        select(func.max(Cabinet.last_seen_at)).where(
            Cabinet.online.is_(True), Cabinet.capability == CabinetCapability.REPORTING
        )
    )
    return None if newest is None else (now - as_utc(newest)).total_seconds()


async def ingest_lag(session: AsyncSession, settings: Settings, now: datetime) -> list[Condition]:
    lag = await ingest_lag_s(session, now)
    if lag is None or lag < settings.ops.ingest_lag_alert_s:
        return []
    return [Condition("ingest_lag", "critical", f"no device report written for {lag:.0f} s")]


FLOOD_QUIET_S = 300.0
"""A cabinet whose messages have stayed within its rate this long is no longer flooding."""


async def flooding_cabinets(session: AsyncSession, settings: Settings, now: datetime) -> list[Condition]:
    """Cabinets whose messages the adapter dropped over their rate lately (its dead letters say so)."""
    topics = await session.scalars(
        select(DeadLetter.topic)
        .where(
            DeadLetter.reason.like("rate limit of %"), DeadLetter.last_seen_at >= now - timedelta(seconds=FLOOD_QUIET_S)
        )
        .distinct()
    )
    cabinets = {route[0] for topic in topics if (route := parse_cabinet_topic(settings.mqtt.topic_prefix, topic))}
    return [
        Condition(
            DEVICE_FLOOD,
            "warning",
            f"cabinet {cabinet_id} sends more than "
            f"{settings.devices.device_rate_per_s:g} messages a second; the excess is dropped",
            cabinet_id=cabinet_id,
        )
        for cabinet_id in sorted(cabinets)
    ]


async def current_conditions(session: AsyncSession, settings: Settings, now: datetime) -> list[Condition]:
    """Every condition that holds now, one per key."""
    found: dict[str, Condition] = {}
    for conditions in (
        await offline_cabinets(session, settings, now),
        await slot_problems(session),
        await unacknowledged_doors(session, settings, now),
        await battery_problems(session, settings),
        await empty_before_peak(session, settings, now),
        await ingest_lag(session, settings, now),
        await flooding_cabinets(session, settings, now),
    ):
        for condition in conditions:
            found.setdefault(condition.key, condition)
    return list(found.values())


async def apply_conditions(session: AsyncSession, conditions: Sequence[Condition]) -> tuple[list[Alert], list[Alert]]:
    """Open an alert for each new condition and resolve the rules' open alerts whose condition is gone.
    Returns (opened, resolved)."""
    now = utcnow()
    open_alerts = {
        a.dedupe_key: a
        for a in await session.scalars(
            select(Alert).where(Alert.status == AlertStatus.OPEN, Alert.kind.in_(RULE_KINDS))
        )
    }
    opened = []
    for condition in conditions:
        alert = open_alerts.pop(condition.key, None)
        if alert is not None:
            alert.last_seen_at = now
            continue
        alert = Alert(
            kind=condition.kind,
            severity=condition.severity,
            dedupe_key=condition.key,
            cabinet_id=condition.cabinet_id,
            slot_no=condition.slot_no,
            battery_serial=condition.battery_serial,
            message=condition.message,
            status=AlertStatus.OPEN,
            occurrences=1,
            created_at=now,
            last_seen_at=now,
        )
        session.add(alert)
        opened.append(alert)
    for alert in open_alerts.values():  # conditions that no longer hold
        alert.status, alert.resolved_at = AlertStatus.RESOLVED, now
    await session.flush()
    return opened, list(open_alerts.values())
