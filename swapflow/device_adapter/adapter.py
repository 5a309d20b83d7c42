"""The device adapter: the bridge from cabinets (MQTT, protocol v1) to the database and to the swap
workflows waiting for door and battery events. It also takes the packs' own reports, which are the
only evidence a command-only (legacy) cabinet's swaps leave.

It holds no state that a second copy would need: routing comes from the database (a slot's
reservation, a command's workflow, the slot a pack is in) and duplicates are caught by the unique key
of `device_messages`, so two adapters on one broker still deliver each event once. What it keeps in
memory (telemetry and battery report watermarks) only saves work.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import zlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, TypeVar

import aiomqtt
import temporalio.client
from pydantic import BaseModel, ValidationError
from sqlalchemy import or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.engine import Database
from swapflow.db.models import (
    Battery,
    Cabinet,
    DeadLetter,
    DeviceCommand,
    DeviceMessage,
    DoorState,
    Slot,
    SwapOrder,
    SwapStatus,
    as_utc,
    utcnow,
)
from swapflow.device_adapter.signals import SignalSender
from swapflow.mqtt import mqtt_client
from swapflow.protocol.v1 import (
    BatteryTelemetry,
    CabinetEvent,
    CabinetState,
    Channel,
    CommandAck,
    EventType,
    SlotReport,
    Telemetry,
    battery_topic,
    cabinet_topic,
    parse_battery_topic,
    parse_cabinet_topic,
)
from swapflow.settings import Settings
from swapflow.temporal import connect_temporal
from swapflow.workflows.models import DeviceSignal, DeviceSignalKind, swap_workflow_id

log = logging.getLogger(__name__)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

SUBSCRIBED_CHANNELS = (Channel.STATE, Channel.TELEMETRY, Channel.EVENTS, Channel.ACKS)
# door_opened only updates state: the open_door ack already told the workflow, and every signal costs
# the workflow a task. What a swap waits for is signalled.
SIGNALLED_EVENTS = frozenset({EventType.DOOR_CLOSED, EventType.BATTERY_INSERTED, EventType.BATTERY_REMOVED,
                              EventType.FAULT})
"""What the adapter listens to; `commands` flows the other way."""

_MAX_DEAD_LETTER_PAYLOAD = 64 * 1024  # enough for any valid message; keeps a flood of junk bounded
_TELEMETRY_BATCH = 50  # cabinets per transaction: short transactions keep SQLite's writer lock free
_BATTERY_BATCH = 200  # battery reports per transaction: each is one small row update
_BATTERY_REPORT = "battery_report"  # kind of a battery report in device_messages
_NO_CABINET = "-"  # device_messages.cabinet_id of a report from a pack that is in no cabinet
_MAX_CABINET_ID = 40  # cabinets.id is at most this long
_AFTER_WILL = math.inf  # seq watermark after a last-will: buffered telemetry must not revive the cabinet


class Rejected(Exception):
    """A message the adapter cannot accept; it becomes a dead letter with this reason."""


@dataclass
class AdapterStats:
    """Counters for the log line and for tests."""

    messages: int = 0
    dead_letters: int = 0
    signals: int = 0
    duplicates: int = 0
    stale: int = 0


def _as_bytes(payload: Any) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return b"" if payload is None else str(payload).encode()


def _parse(model: type[M], what: str, data: Any) -> M:
    """`data` as `model`; Rejected with "invalid <what> payload: <problems>" when it is not one."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()[:5]
        )
        raise Rejected(f"invalid {what} payload: {problems}") from None


def _load_json(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise Rejected(f"malformed JSON: {exc}") from None


def _check_cabinet_id(topic_cabinet: str, payload_cabinet: str) -> None:
    if topic_cabinet != payload_cabinet:
        raise Rejected(f"payload cabinet_id {payload_cabinet!r} does not match topic cabinet {topic_cabinet!r}")


def _parse_battery_report(topic_serial: str, data: Any) -> BatteryTelemetry:
    """A pack's own report, checked against its topic and for a place that is whole."""
    report = _parse(BatteryTelemetry, "battery telemetry", data)
    if report.serial != topic_serial:
        raise Rejected(f"payload serial {report.serial!r} does not match topic battery {topic_serial!r}")
    if report.reading.serial != report.serial:
        raise Rejected(f"reading serial {report.reading.serial!r} does not match battery {report.serial!r}")
    if (report.cabinet_id is None) != (report.slot_no is None):
        raise Rejected("invalid battery telemetry payload: cabinet_id and slot_no must be given together")
    if report.cabinet_id is not None and not 0 < len(report.cabinet_id) <= _MAX_CABINET_ID:
        raise Rejected(f"invalid battery telemetry payload: cabinet_id: 1 to {_MAX_CABINET_ID} characters")
    return report


@dataclass(frozen=True)
class _Route:
    """One signal a battery report causes: to the workflow of a reserved slot."""

    workflow_id: str
    signal: DeviceSignal


def _route_battery_report(
    report: BatteryTelemetry, reserved_at: dict[tuple[str, int], Slot], reserved_holding: dict[str, Slot]
) -> list[_Route]:
    """The signals a report causes, from the reserved slots it concerns: the slot it says the pack is in
    (`in_slot=True`), and the slot the database holds the pack in when the report puts it elsewhere or
    nowhere (`in_slot=False`)."""
    at = as_utc(report.ts)
    message_id = f"bat:{report.serial}:{report.seq}"
    place = (report.cabinet_id, report.slot_no) if report.cabinet_id and report.slot_no else None
    routes = []
    if place is not None and (slot := reserved_at.get(place)) is not None and slot.reserved_order_id:
        routes.append(_Route(swap_workflow_id(slot.reserved_order_id), DeviceSignal(
            message_id=message_id, kind=DeviceSignalKind.BATTERY_REPORT, cabinet_id=slot.cabinet_id, at=at,
            slot_no=slot.slot_no, battery=report.reading, battery_serial=report.serial, in_slot=True,
        )))
    held = reserved_holding.get(report.serial)
    if held is not None and held.reserved_order_id and (held.cabinet_id, held.slot_no) != place:
        # Its own id: the same report may also have told the same swap the pack is in another of its slots.
        routes.append(_Route(swap_workflow_id(held.reserved_order_id), DeviceSignal(
            message_id=f"{message_id}:left", kind=DeviceSignalKind.BATTERY_REPORT, cabinet_id=held.cabinet_id,
            at=at, slot_no=held.slot_no, battery=report.reading, battery_serial=report.serial, in_slot=False,
        )))
    return routes


class DeviceAdapter:
    """Consumes cabinet messages, keeps the device view in the database current, and signals the
    workflows that wait for device events. See docs/protocol.md for the contract with cabinets."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        temporal: temporalio.client.Client,
        *,
        lanes: int = 8,
        telemetry_flush_s: float = 1.0,
        signal_retry_s: float = 60.0,
        db_retry_s: float = 30.0,
        drain_timeout_s: float = 5.0,
        stats_interval_s: float = 60.0,
    ) -> None:
        self.settings = settings
        self.db = db
        self.temporal = temporal
        self.prefix = settings.mqtt_topic_prefix
        # A stable id: after a restart the broker hands over what it queued for this adapter meanwhile.
        self.client_id = settings.effective_adapter_client_id
        self.ready = asyncio.Event()
        """Set while subscribed to the broker."""
        self.stats = AdapterStats()
        self._lanes = lanes
        self._telemetry_flush_s = telemetry_flush_s
        self._db_retry_s = db_retry_s
        self._drain_timeout_s = drain_timeout_s
        self._stats_interval_s = stats_interval_s
        self._signals = SignalSender(
            temporal, self._dead_letter, retry_for_s=signal_retry_s, on_delivered=self._count_signal
        )
        self._postgres = db.engine.dialect.name == "postgresql"
        # Highest telemetry seq applied per cabinet; reset by a birth, blocked by a last-will.
        self._telemetry_seq: dict[str, float] = {}
        # Time of the latest door event per cabinet: older telemetry must not undo the door it reported.
        self._event_at: dict[str, datetime] = {}
        # Latest telemetry per cabinet waiting for the next batch write (newer replaces older).
        self._pending_telemetry: dict[str, tuple[str, bytes]] = {}
        # Highest battery report seq applied per pack serial.
        self._battery_seq: dict[str, int] = {}
        # Battery reports waiting for the next batch, in arrival order.
        self._pending_battery_reports: list[tuple[str, bytes]] = []

    # ----------------------------------------------------------------------------------------- running

    async def run(self) -> None:
        """Consume the broker until cancelled, reconnecting with backoff when it goes away. On
        cancellation, messages already taken from the broker are finished (bounded by
        `drain_timeout_s`) before returning."""
        queues: list[asyncio.Queue[tuple[str, bytes]]] = [asyncio.Queue(maxsize=10_000) for _ in range(self._lanes)]
        workers = [asyncio.create_task(self._lane(queue)) for queue in queues]
        workers.append(asyncio.create_task(self._telemetry_writer()))
        workers.append(asyncio.create_task(self._report_stats()))
        try:
            await self._consume(queues)
        finally:
            self.ready.clear()
            try:
                await asyncio.wait_for(self._drain(queues), self._drain_timeout_s)
            except TimeoutError:
                log.error("adapter stopped with %d messages unprocessed", sum(q.qsize() for q in queues))
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            await self._signals.drain(self._drain_timeout_s)
            log.info("device adapter stopped: %s", asdict(self.stats))

    async def _consume(self, queues: Sequence[asyncio.Queue[tuple[str, bytes]]]) -> None:
        delay = 0.5
        filters = [(cabinet_topic(self.prefix, "+", channel), 1) for channel in SUBSCRIBED_CHANNELS]
        filters.append((battery_topic(self.prefix, "+"), 1))
        while True:
            try:
                # A persistent session: the broker keeps QoS 1 messages for us across a short outage.
                async with mqtt_client(self.settings, self.client_id, clean_session=False) as client:
                    await client.subscribe(filters)
                    self.ready.set()
                    delay = 0.5
                    log.info("device adapter subscribed to %s/cabinets/+/… and %s", self.prefix,
                             battery_topic(self.prefix, "+"))
                    async for message in client.messages:
                        # Some brokers (amqtt) also push retained messages matching other clients' filters.
                        if not any(message.topic.matches(f) for f, _ in filters):
                            continue
                        self.stats.messages += 1
                        await self._dispatch(message.topic.value, _as_bytes(message.payload), queues)
            except aiomqtt.MqttError as exc:
                self.ready.clear()
                log.warning("MQTT connection lost (%s); reconnecting in %.1fs", exc, delay)
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, 30.0)

    async def _dispatch(self, topic: str, payload: bytes, queues: Sequence[asyncio.Queue[tuple[str, bytes]]]) -> None:
        route = parse_cabinet_topic(self.prefix, topic)
        if route is not None and route[1] is Channel.TELEMETRY:
            self._pending_telemetry[route[0]] = (topic, payload)
            return
        if route is None and parse_battery_topic(self.prefix, topic) is not None:
            # Batched like telemetry: packs report every few seconds, and one transaction per report
            # would keep SQLite's writer lock busy.
            self._pending_battery_reports.append((topic, payload))
            return
        # One lane per cabinet keeps a cabinet's messages in order; lanes run concurrently.
        key = route[0] if route is not None else topic
        await queues[zlib.crc32(key.encode()) % len(queues)].put((topic, payload))

    async def _lane(self, queue: asyncio.Queue[tuple[str, bytes]]) -> None:
        while True:
            topic, payload = await queue.get()
            try:
                # Signals go out on their own tasks: the lane moves on to the next message.
                await self._process(topic, payload)
            finally:
                queue.task_done()

    async def _drain(self, queues: Sequence[asyncio.Queue[tuple[str, bytes]]]) -> None:
        await asyncio.gather(*(queue.join() for queue in queues))
        await self._write_pending_telemetry()
        await self._write_pending_battery_reports()

    async def _telemetry_writer(self) -> None:
        while True:
            await asyncio.sleep(self._telemetry_flush_s)
            await self._write_pending_telemetry()
            await self._write_pending_battery_reports()

    async def _write_pending_battery_reports(self) -> None:
        # The signals go out on their own tasks (SignalSender), like those of the lanes.
        batch, self._pending_battery_reports = self._pending_battery_reports, []
        for start in range(0, len(batch), _BATTERY_BATCH):
            await self._apply_battery_reports(batch[start : start + _BATTERY_BATCH])

    async def _write_pending_telemetry(self) -> None:
        batch, self._pending_telemetry = list(self._pending_telemetry.values()), {}
        for start in range(0, len(batch), _TELEMETRY_BATCH):
            await self._apply_telemetry(batch[start : start + _TELEMETRY_BATCH])

    async def _report_stats(self) -> None:
        last: dict[str, int] = {}
        while True:
            await asyncio.sleep(self._stats_interval_s)
            now = asdict(self.stats)
            if now != last:
                log.info("device adapter: %s, signals pending %d", now, self._signals.pending)
                last = now

    def _count_signal(self) -> None:
        self.stats.signals += 1

    # -------------------------------------------------------------------------------------- messages

    async def handle(self, topic: str, payload: bytes) -> None:
        """Process one message completely, signals included. Never raises for bad input: what cannot
        be accepted becomes a dead letter."""
        self.stats.messages += 1
        tasks = await self._process(topic, payload)
        if tasks:
            await asyncio.gather(*tasks)

    async def _process(self, topic: str, payload: bytes) -> list[asyncio.Task[None]]:
        """Parse, record and route one message; returns the signal deliveries it started."""
        try:
            route = parse_cabinet_topic(self.prefix, topic)
            if route is None:
                if parse_battery_topic(self.prefix, topic) is not None:
                    return await self._apply_battery_reports([(topic, payload)])
                raise Rejected(f"not a cabinet or battery topic under {self.prefix!r}")
            cabinet_id, channel = route
            if channel is Channel.TELEMETRY:
                await self._apply_telemetry([(topic, payload)])
                return []
            if channel is Channel.COMMANDS:
                raise Rejected("commands flow from the platform to cabinets, not back")
            data = _load_json(payload)
            if channel is Channel.STATE:
                return await self._on_state(topic, payload, cabinet_id, _parse(CabinetState, channel.value, data))
            if channel is Channel.EVENTS:
                event = _parse(CabinetEvent, channel.value, data)
                return await self._on_event(topic, payload, cabinet_id, data, event)
            return await self._on_ack(topic, payload, cabinet_id, data, _parse(CommandAck, channel.value, data))
        except Rejected as exc:
            await self._dead_letter(topic, payload, str(exc))
        except Exception as exc:
            log.exception("failed to process a message on %s", topic)
            await self._dead_letter(topic, payload, f"internal error: {exc!r}")
        return []

    async def _on_state(
        self, topic: str, payload: bytes, cabinet_id: str, state: CabinetState
    ) -> list[asyncio.Task[None]]:
        _check_cabinet_id(cabinet_id, state.cabinet_id)
        at = as_utc(state.ts) if state.ts else utcnow()
        kind = DeviceSignalKind.CABINET_ONLINE if state.online else DeviceSignalKind.CABINET_OFFLINE
        # Derived from the message, so the retained copy seen again after a reconnect, or by a second
        # adapter, is recognised as the same transition.
        message_id = f"state:{kind.value}:{at.isoformat()}"[:80]

        async def work(session: AsyncSession) -> list[str]:
            cabinet = await self._cabinet(session, cabinet_id)
            changed = cabinet.online != state.online
            # A retained birth replayed after our reconnect is older than what telemetry has told us since.
            news = cabinet.last_seen_at is None or at > as_utc(cabinet.last_seen_at)
            cabinet.online = state.online
            if state.firmware:
                cabinet.firmware = state.firmware
            if state.online and news:
                cabinet.last_seen_at = at
                if state.slots:
                    await self._apply_slot_reports(session, [(cabinet_id, at, state.slots, True)])
            if not changed:
                return []
            snapshot = state.model_dump(mode="json", exclude_none=True)
            if not await self._record(session, cabinet_id, message_id, kind.value, topic, snapshot):
                return []
            orders = await session.scalars(
                select(SwapOrder.id).where(
                    SwapOrder.cabinet_id == cabinet_id, SwapOrder.status == SwapStatus.IN_PROGRESS
                )
            )
            return list(orders)

        order_ids = await self._transaction(work)
        if state.online:
            self._telemetry_seq.pop(cabinet_id, None)  # a new session may restart its seq
        else:
            self._telemetry_seq[cabinet_id] = _AFTER_WILL
        signal = DeviceSignal(message_id=message_id, kind=kind, cabinet_id=cabinet_id, at=at)
        return [self._signals.send(swap_workflow_id(o), signal, topic=topic, payload=payload) for o in order_ids]

    async def _on_event(
        self, topic: str, payload: bytes, cabinet_id: str, raw: dict[str, Any], event: CabinetEvent
    ) -> list[asyncio.Task[None]]:
        _check_cabinet_id(cabinet_id, event.cabinet_id)
        at = as_utc(event.ts)

        async def work(session: AsyncSession) -> tuple[bool, str | None]:
            await self._cabinet(session, cabinet_id)
            slot: Slot | None = None
            if event.slot_no is not None:
                slot = await session.scalar(
                    select(Slot).where(Slot.cabinet_id == cabinet_id, Slot.slot_no == event.slot_no)
                )
                if slot is None:
                    raise Rejected(f"cabinet {cabinet_id} has no slot {event.slot_no}")
            # Events without a slot (cabinet-wide faults) are recorded but wait for no workflow.
            workflow_id = swap_workflow_id(slot.reserved_order_id) if slot and slot.reserved_order_id else None
            if not await self._record(session, cabinet_id, event.event_id, event.type.value, topic, raw, workflow_id):
                return False, None
            if slot is not None:
                if event.type is EventType.DOOR_OPENED:
                    slot.door = DoorState.OPEN
                elif event.type is EventType.DOOR_CLOSED:
                    slot.door = DoorState.CLOSED
                elif event.type is EventType.FAULT:
                    slot.fault = (event.fault_code or event.detail or "fault")[:100]
            return True, workflow_id

        accepted, workflow_id = await self._transaction(work)
        if not accepted:
            self.stats.duplicates += 1
            return []
        if event.type in (EventType.DOOR_OPENED, EventType.DOOR_CLOSED):
            self._event_at[cabinet_id] = max(at, self._event_at.get(cabinet_id, at))
        if workflow_id is None or event.type not in SIGNALLED_EVENTS:
            return []
        signal = DeviceSignal(
            message_id=event.event_id,
            kind=DeviceSignalKind(event.type.value),
            cabinet_id=cabinet_id,
            at=at,
            slot_no=event.slot_no,
            battery=event.battery,
            battery_serial=event.battery_serial,
            fault_code=event.fault_code,
        )
        return [self._signals.send(workflow_id, signal, topic=topic, payload=payload)]

    async def _on_ack(
        self, topic: str, payload: bytes, cabinet_id: str, raw: dict[str, Any], ack: CommandAck
    ) -> list[asyncio.Task[None]]:
        _check_cabinet_id(cabinet_id, ack.cabinet_id)
        message_id = f"ack:{ack.command_id}"

        async def work(session: AsyncSession) -> tuple[bool, DeviceCommand | None]:
            await self._cabinet(session, cabinet_id)
            command = await session.get(DeviceCommand, ack.command_id)
            if command is None:
                raise Rejected(f"ack for unknown command {ack.command_id!r}")
            if command.cabinet_id != cabinet_id:
                raise Rejected(f"ack for command {ack.command_id!r}, which was sent to {command.cabinet_id}")
            if not await self._record(session, cabinet_id, message_id, "command_ack", topic, raw, command.workflow_id):
                return False, None
            command.acked_at = utcnow()
            command.ok = ack.ok
            command.error = ack.error[:200] if ack.error else None
            command.result = ack.result.model_dump(mode="json") if ack.result else None
            return True, command

        accepted, command = await self._transaction(work)
        if not accepted:
            self.stats.duplicates += 1
            return []
        if command is None or command.workflow_id is None:
            return []
        signal = DeviceSignal(
            message_id=message_id,
            kind=DeviceSignalKind.COMMAND_ACK,
            cabinet_id=cabinet_id,
            at=as_utc(ack.ts),
            slot_no=command.slot_no,
            command_id=ack.command_id,
            ok=ack.ok,
            error=ack.error,
            battery=ack.result,
        )
        return [self._signals.send(command.workflow_id, signal, topic=topic, payload=payload)]

    async def _apply_telemetry(self, batch: Sequence[tuple[str, bytes]]) -> None:
        """Validate a batch of telemetry messages and write the fresh ones in one transaction."""
        fresh: dict[str, tuple[str, bytes, Telemetry]] = {}
        for topic, payload in batch:
            try:
                route = parse_cabinet_topic(self.prefix, topic)
                if route is None:
                    raise Rejected(f"not a cabinet topic under {self.prefix!r}")
                telemetry = _parse(Telemetry, Channel.TELEMETRY.value, _load_json(payload))
                _check_cabinet_id(route[0], telemetry.cabinet_id)
            except Rejected as exc:
                await self._dead_letter(topic, payload, str(exc))
                continue
            if telemetry.seq <= self._telemetry_seq.get(telemetry.cabinet_id, -1):
                self.stats.stale += 1
                continue
            fresh[telemetry.cabinet_id] = (topic, payload, telemetry)
        if not fresh:
            return

        async def work(session: AsyncSession) -> set[str]:
            cabinets = {
                c.id: c for c in await session.scalars(select(Cabinet).where(Cabinet.id.in_(list(fresh))))
            }
            reports = []
            for cabinet_id, (_, _, telemetry) in fresh.items():
                cabinet = cabinets.get(cabinet_id)
                if cabinet is None:
                    continue
                at = as_utc(telemetry.ts)
                cabinet.online = True
                if cabinet.last_seen_at is None or at > as_utc(cabinet.last_seen_at):
                    cabinet.last_seen_at = at
                doors_current = at >= self._event_at.get(cabinet_id, at)
                reports.append((cabinet_id, at, telemetry.slots, doors_current))
            await self._apply_slot_reports(session, reports)
            return set(fresh) - set(cabinets)

        try:
            unknown = await self._transaction(work)
        except Exception:
            # Telemetry repeats every few seconds; losing one batch costs nothing but freshness.
            log.exception("failed to write telemetry of %d cabinets", len(fresh))
            return
        for cabinet_id, (topic, payload, telemetry) in fresh.items():
            if cabinet_id in unknown:
                await self._dead_letter(topic, payload, f"unknown cabinet {cabinet_id!r}")
            else:
                self._telemetry_seq[cabinet_id] = telemetry.seq

    async def _apply_battery_reports(self, batch: Sequence[tuple[str, bytes]]) -> list[asyncio.Task[None]]:
        """Validate a batch of packs' own reports, route those about reserved slots to their swaps and
        write the readings, in one transaction. Custody is never changed: only a swap moves a pack.
        Returns the signal deliveries it started. Never raises: what fails becomes a dead letter."""
        # The newest report per pack: a report is a snapshot, and a newer one of the same pack says
        # where it is now. Older ones (in the batch, or behind the watermark) are dropped.
        latest: dict[str, tuple[str, bytes, dict[str, Any], BatteryTelemetry]] = {}
        for topic, payload in batch:
            serial = parse_battery_topic(self.prefix, topic)
            try:
                if serial is None:
                    raise Rejected(f"not a battery topic under {self.prefix!r}")
                data = _load_json(payload)
                report = _parse_battery_report(serial, data)
            except Rejected as exc:
                await self._dead_letter(topic, payload, str(exc))
                continue
            newest = max(self._battery_seq.get(serial, -1), latest[serial][3].seq if serial in latest else -1)
            if report.seq <= newest:
                self.stats.stale += 1
                continue
            if serial in latest:
                self.stats.stale += 1  # the one it replaces
            latest[serial] = (topic, payload, data, report)
        if not latest:
            return []

        async def work(session: AsyncSession) -> tuple[list[tuple[str, bytes, _Route]], int]:
            serials = list(latest)
            places = {r.cabinet_id for *_, r in latest.values() if r.cabinet_id}
            batteries = {b.serial: b for b in await session.scalars(select(Battery).where(Battery.serial.in_(serials)))}
            reserved = list(await session.scalars(select(Slot).where(
                Slot.reserved_order_id.is_not(None),
                or_(Slot.cabinet_id.in_(list(places)), Slot.battery_serial.in_(serials)),
            )))
            reserved_at = {(s.cabinet_id, s.slot_no): s for s in reserved}
            reserved_holding = {s.battery_serial: s for s in reserved if s.battery_serial}
            routed: list[tuple[str, bytes, _Route]] = []
            duplicates = 0
            for topic, payload, data, report in latest.values():
                routes = _route_battery_report(report, reserved_at, reserved_holding)
                battery = batteries.get(report.serial)
                # Recorded when a swap hears of it, or when the pack is not ours: the trace an operator
                # follows. Other reports are routine readings, kept only as the pack's latest values.
                if routes or battery is None:
                    recorded = await self._record(
                        session, report.cabinet_id or _NO_CABINET, f"bat:{report.serial}:{report.seq}",
                        _BATTERY_REPORT, topic, data, routes[0].workflow_id if routes else None,
                    )
                    if not recorded:
                        duplicates += 1
                        continue
                routed.extend((topic, payload, route) for route in routes)
                at = as_utc(report.ts)
                if battery is not None and (battery.reading_at is None or as_utc(battery.reading_at) <= at):
                    battery.soc = report.reading.soc
                    battery.soh = report.reading.soh
                    battery.voltage_v = report.reading.voltage_v
                    battery.temperature_c = report.reading.temperature_c
                    battery.cycle_count = report.reading.cycle_count
                    battery.reading_at = at
            return routed, duplicates

        try:
            routed, duplicates = await self._transaction(work)
        except Exception as exc:
            log.exception("failed to apply %d battery reports", len(latest))
            for topic, payload, *_ in latest.values():
                await self._dead_letter(topic, payload, f"internal error: {exc!r}")
            return []
        self.stats.duplicates += duplicates
        for serial, (*_, report) in latest.items():
            self._battery_seq[serial] = report.seq
        return [self._signals.send(route.workflow_id, route.signal, topic=topic, payload=payload)
                for topic, payload, route in routed]

    # ------------------------------------------------------------------------------------- database

    async def _apply_slot_reports(
        self, session: AsyncSession, reports: Iterable[tuple[str, datetime, Sequence[SlotReport], bool]]
    ) -> None:
        """Write door, charging and fault of each reported slot and the readings of the packs in them.
        Custody (`slot.battery_serial`) is left alone: it moves only with the swap workflows."""
        reports = list(reports)
        if not reports:
            return
        cabinet_ids = [cabinet_id for cabinet_id, *_ in reports]
        slots = {
            (s.cabinet_id, s.slot_no): s
            for s in await session.scalars(select(Slot).where(Slot.cabinet_id.in_(cabinet_ids)))
        }
        serials = {r.battery.serial for _, _, slot_reports, _ in reports for r in slot_reports if r.battery}
        batteries: dict[str, Battery] = {}
        if serials:
            found = await session.scalars(select(Battery).where(Battery.serial.in_(serials)))
            batteries = {b.serial: b for b in found}
        for cabinet_id, at, slot_reports, doors_current in reports:
            for report in slot_reports:
                slot = slots.get((cabinet_id, report.slot_no))
                if slot is None:
                    continue
                if doors_current:
                    slot.door = DoorState(report.door)
                slot.charging = report.charging
                slot.fault = report.fault[:100] if report.fault else None
                battery = batteries.get(report.battery.serial) if report.battery else None
                if report.battery and battery and (battery.reading_at is None or as_utc(battery.reading_at) <= at):
                    battery.soc = report.battery.soc
                    battery.soh = report.battery.soh
                    battery.voltage_v = report.battery.voltage_v
                    battery.temperature_c = report.battery.temperature_c
                    battery.cycle_count = report.battery.cycle_count
                    battery.reading_at = at

    async def _cabinet(self, session: AsyncSession, cabinet_id: str) -> Cabinet:
        cabinet = await session.get(Cabinet, cabinet_id)
        if cabinet is None:
            raise Rejected(f"unknown cabinet {cabinet_id!r}")
        return cabinet

    async def _record(
        self,
        session: AsyncSession,
        cabinet_id: str,
        message_id: str,
        kind: str,
        topic: str,
        payload: dict[str, Any],
        workflow_id: str | None = None,
    ) -> bool:
        """Insert the device message; False when it is already there (a duplicate)."""
        insert = postgresql.insert if self._postgres else sqlite.insert
        statement = (
            insert(DeviceMessage)
            .values(
                cabinet_id=cabinet_id,
                message_id=message_id,
                kind=kind,
                topic=topic[:200],
                payload=payload,
                workflow_id=workflow_id,
                received_at=utcnow(),
            )
            .on_conflict_do_nothing(index_elements=["cabinet_id", "message_id"])
            .returning(DeviceMessage.id)
        )
        return (await session.execute(statement)).scalar_one_or_none() is not None

    async def _transaction(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run `work` in a transaction, again from the start while the database is briefly unavailable
        or locked (bounded by `db_retry_s`)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._db_retry_s
        delay = 0.05
        while True:
            try:
                async with self.db.transaction() as session:
                    return await work(session)
            except (OperationalError, InterfaceError) as exc:
                if loop.time() + delay > deadline:
                    raise
                log.warning("database unavailable (%s); retrying in %.2fs", exc.orig or exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _dead_letter(self, topic: str, payload: bytes, reason: str) -> None:
        """Keep a message that could not be accepted or routed, for an operator. Never raises."""
        self.stats.dead_letters += 1
        text = payload[:_MAX_DEAD_LETTER_PAYLOAD].decode("utf-8", errors="replace")
        log.warning("dead letter on %s: %s", topic, reason)

        async def work(session: AsyncSession) -> None:
            session.add(DeadLetter(topic=topic[:300], payload=text, reason=reason, received_at=utcnow()))

        try:
            await self._transaction(work)
        except Exception:
            log.exception("could not store dead letter on %s (%s); payload: %r", topic, reason, text)


async def run_adapter(settings: Settings) -> None:
    """The `adapter` process: connect to the database and Temporal, then run the adapter until
    cancelled."""
    db = Database(settings.effective_database_url)
    try:
        temporal = await connect_temporal(settings)
        await DeviceAdapter(settings, db, temporal).run()
    finally:
        await db.dispose()
