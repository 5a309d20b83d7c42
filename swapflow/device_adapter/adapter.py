"""The device adapter: the bridge from cabinets (MQTT, protocol v1) to the database and to the swap
workflows waiting for door and battery events. Command acks are recorded here; the activity that sent a
command hears its ack itself (swapflow/device_commands/queue.py). It also takes the packs' own
reports, which are the only evidence a command-only (legacy) cabinet's swaps leave.

It holds no state that a second copy would need: routing comes from the database (a slot's
reservation, a command's workflow, the slot a pack is in) and duplicates are caught by the unique key
of `device_messages`, so two adapters on one broker still deliver each event once. What it keeps in
memory (telemetry and battery report watermarks) only saves work.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import aiomqtt
import temporalio.client
from pydantic import BaseModel, ValidationError
from sqlalchemy import func, literal, null, or_, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.base import table_of
from swapflow.db.devices import DeviceCommand, DeviceMessage
from swapflow.db.engine import Database
from swapflow.db.network import Battery, Cabinet, Slot
from swapflow.device_adapter.authority import alert_forgery, forgery, running_swaps
from swapflow.device_adapter.clock import DeviceClock
from swapflow.device_adapter.dead_letters import DeadLetters
from swapflow.device_adapter.fairness import FairQueue, RateLimiter
from swapflow.device_adapter.ingest import (
    CabinetReport,
    HistoryBuffer,
    battery_row,
    history_row,
    write_battery_readings,
    write_history,
    write_latest_state,
)
from swapflow.device_adapter.metrics import AdapterMetrics
from swapflow.device_adapter.presence import (
    expire_silent_cabinets,
    is_last_will,
    offline_cause,
    reconcile_slots,
    record_transition,
    swaps_in_progress,
)
from swapflow.device_adapter.reconcile import reconcile_event
from swapflow.device_adapter.signals import SignalSender
from swapflow.device_adapter.telemetry import TelemetryBatch
from swapflow.domain.clock import as_utc, utcnow
from swapflow.domain.network import DoorState, PresenceCause
from swapflow.identity.credentials import service_client_id
from swapflow.infra.metrics import serve_metrics
from swapflow.infra.mqtt import mqtt_client
from swapflow.infra.temporal import connect_temporal
from swapflow.protocol.v1 import (
    BatteryTelemetry,
    CabinetEvent,
    CabinetState,
    Channel,
    CommandAck,
    EventType,
    Telemetry,
    battery_topic,
    cabinet_topic,
    parse_battery_topic,
    parse_cabinet_topic,
)
from swapflow.settings import Settings
from swapflow.workflows.device_contract import DeviceSignal, DeviceSignalKind
from swapflow.workflows.swap_contract import swap_workflow_id

log = logging.getLogger(__name__)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

SUBSCRIBED_CHANNELS = (Channel.STATE, Channel.TELEMETRY, Channel.EVENTS, Channel.ACKS)
# Telemetry has its own connection: a backlog of telemetry at the broker or in the socket must never
# hold up the events and acks that swaps wait for (MQTT delivers one connection's messages in order).
_SWAP_PATH_CHANNELS = frozenset({Channel.STATE, Channel.EVENTS, Channel.ACKS})
# door_opened only updates state: the open_door ack already told the sender, and every signal costs
# the workflow a task. What a swap waits for is signalled.
SIGNALLED_EVENTS = frozenset(
    {EventType.DOOR_CLOSED, EventType.BATTERY_INSERTED, EventType.BATTERY_REMOVED, EventType.FAULT}
)
"""What the adapter listens to; `commands` flows the other way."""

_MAX_PENDING_BATTERY_REPORTS = 50_000  # battery reports waiting for the next batch write; more are refused
_HISTORY_BATCH = 5_000  # history rows per transaction
_BATTERY_BATCH = 200  # battery reports per transaction: each is one small row update
_BATTERY_REPORT = "battery_report"  # kind of a battery report in device_messages
_NO_CABINET = "-"  # device_messages.cabinet_id of a report from a pack that is in no cabinet
_MAX_CABINET_ID = 40  # cabinets.id is at most this long
_GC_YOUNG_THRESHOLD = 100_000  # allocations between young collections (default 700); see tune_gc_for_ingestion


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


def _parse_json(model: type[M], what: str, payload: bytes) -> M:
    """`payload` (JSON) as `model`, parsed in one step (the hot path of telemetry); on failure the
    same reasons as `_load_json` and `_parse` give."""
    try:
        return model.model_validate_json(payload)
    except ValidationError:
        return _parse(model, what, _load_json(payload))


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
        routes.append(
            _Route(
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
        routes.append(
            _Route(
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
    return routes


_PackReport = tuple[str, bytes, dict[str, Any], BatteryTelemetry]
"""A pack's report as received (topic, payload), parsed (JSON, model)."""


@dataclass
class _BatteryOutcome:
    """What applying a batch of pack reports did: signals to send, duplicates, the report applied per
    pack, the forgeries (topic, payload, reason) and the reports an applied newer one replaced."""

    routed: list[tuple[str, bytes, _Route]]
    duplicates: int
    latest: dict[str, _PackReport]
    forged: list[tuple[str, bytes, str]]
    stale: int


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
        sweep_interval_s: float | None = None,
        probe_interval_s: float = 5.0,
        probe_timeout_s: float = 10.0,
        metrics: AdapterMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.temporal = temporal
        self.prefix = settings.mqtt_topic_prefix
        # A stable id: after a restart the broker hands over what it queued for this adapter meanwhile.
        self.client_id = service_client_id(settings.effective_adapter_client_id)
        self.ready = asyncio.Event()
        """Set while subscribed to the broker (both connections)."""
        self._events_subscribed = asyncio.Event()
        # Set when one of our connections is lost: the others may be half-open to a broker that went away
        # (amqtt does not always close its clients' sockets when it stops), so they subscribe again too.
        self._connection_lost = asyncio.Event()
        self._telemetry_subscribed = asyncio.Event()
        self.stats = AdapterStats()
        self._lanes = lanes
        self._telemetry_flush_s = telemetry_flush_s
        self._db_retry_s = db_retry_s
        self._drain_timeout_s = drain_timeout_s
        self._stats_interval_s = stats_interval_s
        self._probe_interval_s = probe_interval_s
        self._probe_timeout_s = probe_timeout_s
        self._silence_s = settings.heartbeat_interval_s * settings.heartbeat_missed_limit
        self._sweep_interval_s = sweep_interval_s or min(5.0, settings.heartbeat_interval_s / 2)
        self.metrics = metrics or AdapterMetrics()
        self.history = HistoryBuffer(settings.telemetry_history_queue_rows, self.metrics)
        self._clock = DeviceClock(
            settings.device_clock_skew_s, settings.device_clock_max_age_s, self.metrics.clock_clamped
        )
        self._postgres = db.engine.dialect.name == "postgresql"
        self.dead_letters = DeadLetters(
            settings, self.metrics, self._transaction, postgres=self._postgres, on_reject=self._count_dead_letter
        )
        self._signals = SignalSender(
            temporal, self._dead_letter, retry_for_s=signal_retry_s, on_delivered=self._count_signal
        )
        self.telemetry = TelemetryBatch(
            self._clock,
            self.metrics,
            self.history,
            self._signals,
            self._transaction,
            self._relaxed_commit,
            self._dead_letter,
            postgres=self._postgres,
            on_stale=self._count_stale,
        )
        # Events, acks and states per cabinet, served round-robin; each cabinet's rate is limited.
        self._queue: FairQueue[tuple[str, bytes]] = FairQueue(settings.device_queue_per_cabinet)
        self._limiter = RateLimiter(settings.device_rate_per_s, settings.device_rate_burst, time.monotonic)
        # Highest battery report seq applied per pack serial.
        self._battery_seq: dict[str, int] = {}
        # Battery reports waiting for the next batch, in arrival order.
        self._pending_battery_reports: list[tuple[str, bytes]] = []
        # When this adapter last heard each cabinet (loop time): spares it from heartbeat expiry while its
        # telemetry waits for the next batch write.
        self._heard: dict[str, float] = {}
        self._listening_since: float | None = None  # loop time since when the subscription has been up

    # ----------------------------------------------------------------------------------------- running

    async def run(self) -> None:
        """Consume the broker until cancelled, reconnecting with backoff when it goes away. On
        cancellation, messages already taken from the broker are finished (bounded by
        `drain_timeout_s`) before returning."""
        workers = [asyncio.create_task(self._lane()) for _ in range(self._lanes)]
        workers.append(asyncio.create_task(self._telemetry_writer()))
        workers.append(asyncio.create_task(self._history_writer()))
        workers.append(asyncio.create_task(self._presence_sweeper()))
        workers.append(asyncio.create_task(self._report_stats()))
        server = serve_metrics(self.metrics.registry, self.settings.adapter_metrics_port)
        # An MQTT client reads about one message per turn of the event loop, so at thousands of
        # telemetry messages a second one connection is the limit; several share the subscription.
        connections = [asyncio.create_task(self._consume(telemetry=False))]
        connections += [
            asyncio.create_task(self._consume(telemetry=True, index=i))
            for i in range(self.settings.adapter_telemetry_connections)
        ]
        try:
            await asyncio.gather(*connections)
        finally:
            for connection in connections:
                connection.cancel()
            await asyncio.gather(*connections, return_exceptions=True)
            if server is not None:
                server.shutdown()
            self.ready.clear()
            try:
                await asyncio.wait_for(self._drain(), self._drain_timeout_s)
            except TimeoutError:
                log.error("adapter stopped with %d messages unprocessed", len(self._queue))
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            await self._signals.drain(self._drain_timeout_s)
            await self.dead_letters.flush()  # those of signals that could not be delivered
            log.info("device adapter stopped: %s", asdict(self.stats))

    async def _consume(self, *, telemetry: bool, index: int = 0) -> None:
        """One broker connection: telemetry (QoS 0, a clean session: missed snapshots are not worth
        keeping), or everything else (QoS 1, a persistent session: the broker keeps events and acks for
        us across a short outage)."""
        delay = 0.5
        if telemetry:
            topic_filter = cabinet_topic(self.prefix, "+", Channel.TELEMETRY)
            if self.settings.adapter_telemetry_connections > 1:
                topic_filter = f"$share/swapflow-adapter/{topic_filter}"
            filters = [(topic_filter, 0)]
            client_id, subscribed = f"{self.client_id}-telemetry-{index}", self._telemetry_subscribed
        else:
            filters = [(cabinet_topic(self.prefix, "+", channel), 1) for channel in _SWAP_PATH_CHANNELS]
            filters.append((battery_topic(self.prefix, "+"), 1))
            client_id, subscribed = self.client_id, self._events_subscribed
        # A connection that stays up can still stop delivering: on amqtt another client connecting under
        # our client id takes over the session without disconnecting us. A probe we publish to ourselves
        # makes sure something comes in; silence through a probe counts as a lost connection.
        probe = f"{self.prefix}/adapter/{client_id}/probe"
        qos = filters[0][1]  # the probe travels as the connection's messages do
        while True:
            try:
                async with mqtt_client(self.settings, client_id, clean_session=not telemetry) as client:
                    lost_elsewhere = self._connection_lost
                    await client.subscribe([*filters, (probe, qos)])
                    subscribed.set()
                    if self._telemetry_subscribed.is_set() and self._events_subscribed.is_set():
                        self.ready.set()
                    if telemetry:
                        self._listening_since = asyncio.get_running_loop().time()
                    delay = 0.5
                    log.info("device adapter subscribed to %s", ", ".join(f for f, _ in filters))
                    await self._until_lost(client, (probe, qos), lost_elsewhere, telemetry=telemetry)
            except aiomqtt.MqttError as exc:
                subscribed.clear()
                self.ready.clear()
                if not isinstance(exc, _PeerConnectionLost):
                    lost, self._connection_lost = self._connection_lost, asyncio.Event()
                    lost.set()
                if telemetry:
                    self._listening_since = None
                log.warning("MQTT connection lost (%s); reconnecting in %.1fs", exc, delay)
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, 30.0)

    async def _until_lost(
        self, client: aiomqtt.Client, probe: tuple[str, int], lost_elsewhere: asyncio.Event, *, telemetry: bool
    ) -> None:
        """Take the connection's messages until it fails, stays silent through a probe, or another of our
        connections is lost; raises MqttError."""
        heard = asyncio.Event()
        reader = asyncio.create_task(self._read(client, probe[0], heard, telemetry=telemetry))
        watchdog = asyncio.create_task(self._watch(client, probe, heard))
        elsewhere = asyncio.create_task(lost_elsewhere.wait())
        try:
            await asyncio.wait({reader, watchdog, elsewhere}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, watchdog, elsewhere):
                task.cancel()
            outcomes = await asyncio.gather(reader, watchdog, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                raise outcome
        if lost_elsewhere.is_set():
            raise _PeerConnectionLost("another connection to the broker was lost: subscribing again")
        raise aiomqtt.MqttError(
            f"nothing heard, not even our probe, in {self._probe_timeout_s:.0f}s: the session "
            "was taken over or the subscription lost"
        )

    async def _watch(self, client: aiomqtt.Client, probe: tuple[str, int], heard: asyncio.Event) -> None:
        """Publish a probe every `probe_interval_s`; return when nothing (the probe or any other message:
        a QoS 0 probe may be dropped by a broker that sheds load) comes in within `probe_timeout_s`."""
        while True:
            heard.clear()
            await client.publish(probe[0], b"", qos=probe[1])
            try:
                await asyncio.wait_for(heard.wait(), self._probe_timeout_s)
            except TimeoutError:
                return
            await asyncio.sleep(self._probe_interval_s)

    async def _read(self, client: aiomqtt.Client, probe: str, heard: asyncio.Event, *, telemetry: bool) -> None:
        """Hand each message on without waiting: nothing one cabinet sends may hold up the connection."""
        async for message in client.messages:
            topic = message.topic.value
            heard.set()
            if topic == probe:
                continue
            # Some brokers (amqtt) also push retained messages matching other clients' filters.
            # (The topic parsers check what the filters say, more cheaply than matching them.)
            route = parse_cabinet_topic(self.prefix, topic)
            if route is not None:
                if (route[1] is Channel.TELEMETRY) is not telemetry or route[1] is Channel.COMMANDS:
                    continue
            elif telemetry or parse_battery_topic(self.prefix, topic) is None:
                continue
            self.stats.messages += 1
            self._dispatch(topic, _as_bytes(message.payload))

    def _dispatch(self, topic: str, payload: bytes) -> None:
        route = parse_cabinet_topic(self.prefix, topic)
        serial = parse_battery_topic(self.prefix, topic) if route is None else None
        self.metrics.messages.labels(route[1].value if route else "battery" if serial else "other").inc()
        key = route[0] if route is not None else f"battery:{serial}"
        # What a device sends beyond its rate costs a counter; refusals are counted, not stored one by one.
        if not self._limiter.allow(key):
            self.dead_letters.reject(
                topic, b"", f"rate limit of {self.settings.device_rate_per_s:g} messages/s exceeded: dropped"
            )
            if route is not None:
                self.dead_letters.flooding(route[0])
            return
        if len(payload) > self.settings.device_max_message_bytes:
            self.dead_letters.reject(
                topic,
                payload,
                f"message of {len(payload)} bytes exceeds the limit of {self.settings.device_max_message_bytes}",
            )
            return
        if route is not None:
            self._heard[route[0]] = asyncio.get_running_loop().time()
        # Telemetry takes its own path (batched, coalesced per cabinet) so events and acks, which swaps
        # wait for, never queue behind it.
        if route is not None and route[1] is Channel.TELEMETRY:
            self._offer_telemetry(route[0], topic, payload)
        elif serial is not None:
            # Batched like telemetry: packs report every few seconds, and one transaction per report
            # would keep SQLite's writer lock busy.
            if len(self._pending_battery_reports) >= _MAX_PENDING_BATTERY_REPORTS:
                self.dead_letters.reject(topic, b"", "battery reports backlog full: dropped")
            else:
                self._pending_battery_reports.append((topic, payload))
        # A queue per cabinet keeps its messages in order; cabinets take turns, so one's backlog never
        # delays another's events.
        elif not self._queue.put(key, (topic, payload)):
            self.dead_letters.reject(
                topic, b"", f"cabinet queue of {self.settings.device_queue_per_cabinet} messages full: dropped"
            )

    async def _lane(self) -> None:
        while True:
            key, (topic, payload) = await self._queue.get()
            try:
                # Signals go out on their own tasks: the lane moves on to the next message.
                await self._process(topic, payload)
            finally:
                self._queue.done(key)

    async def _drain(self) -> None:
        await self._queue.join()
        await self.telemetry.write_pending()
        await self._write_pending_battery_reports()
        await self.flush_history()
        await self.dead_letters.flush()

    async def _history_writer(self) -> None:
        while True:
            await asyncio.sleep(self._telemetry_flush_s)
            try:
                await self.flush_history()
            except Exception:
                log.exception("failed to write telemetry history; %d rows dropped", len(self.history))
                self.history.take(len(self.history))

    async def flush_history(self) -> None:
        """Write every history row waiting, in batches; each batch is one short transaction, so event
        writes interleave with them."""
        while len(self.history):
            readings, health = self.history.take(_HISTORY_BATCH)

            async def work(session: AsyncSession, r: list[Any] = readings, h: list[Any] = health) -> None:
                await self._relaxed_commit(session)
                await write_history(session, r, h)

            await self._transaction(work)
            self.metrics.history_rows.inc(len(readings) + len(health))

    async def _presence_sweeper(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval_s)
            try:
                await self.sweep_presence()
            except Exception:
                log.exception("presence sweep failed")
            self._limiter.forget_idle()
            await self.dead_letters.expire_when_due()

    async def sweep_presence(self) -> None:
        """Mark offline the cabinets whose heartbeats stopped, tell their swaps, and refresh the gauges
        of cabinets online and commands outstanding."""
        loop = asyncio.get_running_loop()
        now = utcnow()
        heard_since = loop.time() - self._silence_s
        # Silence is only evidence once this adapter has listened for the whole window: after a restart,
        # cabinets whose last write is old have simply not been heard yet.
        listening = self._listening_since is not None and self._listening_since <= heard_since
        cutoff = now - timedelta(seconds=self._silence_s)

        async def work(session: AsyncSession) -> list[tuple[str, list[str]]]:
            expired = await expire_silent_cabinets(
                session, cutoff=cutoff, now=now, spare=lambda c: self._heard.get(c, -math.inf) > heard_since
            )
            return [(e.cabinet_id, e.order_ids) for e in expired]

        for cabinet_id, order_ids in await self._transaction(work) if listening else []:
            log.info("cabinet %s missed its heartbeats for %.0fs: offline", cabinet_id, self._silence_s)
            self.metrics.presence_transitions.labels(PresenceCause.HEARTBEAT_EXPIRED.value).inc()
            self.telemetry.forget_slots(cabinet_id)
            message_id = f"state:{DeviceSignalKind.CABINET_OFFLINE.value}:expired:{now.isoformat()}"[:80]
            signal = DeviceSignal(
                message_id=message_id, kind=DeviceSignalKind.CABINET_OFFLINE, cabinet_id=cabinet_id, at=now
            )
            topic = cabinet_topic(self.prefix, cabinet_id, Channel.STATE)
            for order_id in order_ids:
                self._signals.send(swap_workflow_id(order_id), signal, topic=topic, payload=b"heartbeat expired")
        async with self.db.sessions() as session:
            self.metrics.cabinets_online.set(
                await session.scalar(select(func.count()).select_from(Cabinet).where(Cabinet.online.is_(True))) or 0
            )
            self.metrics.commands_outstanding.set(
                await session.scalar(
                    select(func.count())
                    .select_from(DeviceCommand)
                    .where(DeviceCommand.acked_at.is_(None), DeviceCommand.deadline_at > now)
                )
                or 0
            )

    async def _telemetry_writer(self) -> None:
        while True:
            await asyncio.sleep(self._telemetry_flush_s)
            await self.telemetry.write_pending()
            await self._write_pending_battery_reports()
            await self.dead_letters.flush()

    async def _write_pending_battery_reports(self) -> None:
        # The signals go out on their own tasks (SignalSender), like those of the lanes.
        batch, self._pending_battery_reports = self._pending_battery_reports, []
        for start in range(0, len(batch), _BATTERY_BATCH):
            await self._apply_battery_reports(batch[start : start + _BATTERY_BATCH])

    def _offer_telemetry(self, cabinet_id: str, topic: str, payload: bytes) -> None:
        """Validate a telemetry message as it arrives (a bad one is never hidden by a later one) and hand
        it to the batch."""
        try:
            telemetry = _parse_json(Telemetry, Channel.TELEMETRY.value, payload)
            _check_cabinet_id(cabinet_id, telemetry.cabinet_id)
            telemetry = self._clock.bound_report(telemetry)
        except Rejected as exc:
            self.dead_letters.reject(topic, payload, str(exc))
            return
        self.telemetry.offer(cabinet_id, topic, payload, telemetry)

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

    def _count_stale(self) -> None:
        self.stats.stale += 1

    def _count_dead_letter(self) -> None:
        self.stats.dead_letters += 1

    # -------------------------------------------------------------------------------------- messages

    async def handle(self, topic: str, payload: bytes) -> None:
        """Process one message completely, signals included. Never raises for bad input: what cannot
        be accepted becomes a dead letter."""
        self.stats.messages += 1
        tasks = await self._process(topic, payload)
        if tasks:
            await asyncio.gather(*tasks)
        await self.dead_letters.flush()

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
                self._offer_telemetry(cabinet_id, topic, payload)
                await self.telemetry.write_pending()
                return []
            if channel is Channel.COMMANDS:
                raise Rejected("commands flow from the platform to cabinets, not back")
            data = _load_json(payload)
            if channel is Channel.STATE:
                return await self._on_state(topic, payload, cabinet_id, _parse(CabinetState, channel.value, data))
            if channel is Channel.EVENTS:
                event = _parse(CabinetEvent, channel.value, data)
                return await self._on_event(topic, payload, cabinet_id, data, event)
            return await self._on_ack(topic, cabinet_id, data, _parse(CommandAck, channel.value, data))
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
        stamped = self._clock.bound(state.ts, past=False) if state.ts else utcnow()
        kind = DeviceSignalKind.CABINET_ONLINE if state.online else DeviceSignalKind.CABINET_OFFLINE
        cause = PresenceCause.BIRTH if state.online else offline_cause(state)
        # Derived from the message, so the retained copy seen again after a reconnect, or by a second
        # adapter, is recognised as the same transition.
        message_id = f"state:{kind.value}:{stamped.isoformat()}"[:80]
        # A last-will carries the time it was registered (at connect), not when the link died: the
        # broker publishes it when it notices, so the transition is stamped on arrival.
        will = is_last_will(state)
        at = utcnow() if will else stamped

        async def work(session: AsyncSession) -> tuple[list[str], int]:
            # Locked: the transition is decided on `online`, which telemetry and the sweep also change.
            cabinet = await session.get(Cabinet, cabinet_id, with_for_update=True)
            if cabinet is None:
                raise Rejected(f"unknown cabinet {cabinet_id!r}")
            # A retained birth replayed after our reconnect is older than what telemetry has told us
            # since; an offline state sent just before a reconnect (on the old connection) may arrive
            # after the new birth. Either is stale by its own timestamp. Equal is not stale: a birth
            # and the telemetry of the same report share a timestamp, and telemetry travels apart.
            news = cabinet.last_seen_at is None or at >= as_utc(cabinet.last_seen_at)
            if not news and not will:
                return [], 0
            changed = cabinet.online != state.online
            # A transition seen before (a retained copy, another adapter) changes nothing, not even the flag.
            if changed and not await self._record(
                session, cabinet_id, message_id, kind.value, topic, state.model_dump(mode="json", exclude_none=True)
            ):
                return [], 0
            cabinet.online = state.online
            if state.firmware:
                cabinet.firmware = state.firmware
            discrepancies = 0
            if state.online:
                cabinet.last_seen_at = at
                if state.slots:
                    # A birth re-announces every slot: packs that moved while it was away show here.
                    discrepancies = len(await reconcile_slots(session, cabinet_id, at, state.slots))
                    await write_latest_state(session, [CabinetReport(cabinet_id, at, state.slots)])
            if not changed:
                return [], discrepancies
            record_transition(session, cabinet_id, state.online, cause, at)
            self.metrics.presence_transitions.labels(cause.value).inc()
            return await swaps_in_progress(session, cabinet_id), discrepancies

        order_ids, discrepancies = await self._transaction(work)
        if discrepancies:
            log.warning("cabinet %s reconnected with %d slots that differ from custody", cabinet_id, discrepancies)
        self.telemetry.forget_slots(cabinet_id)
        if state.online:
            self.telemetry.new_session(cabinet_id)
        else:
            self.telemetry.last_will(cabinet_id)
        signal = DeviceSignal(message_id=message_id, kind=kind, cabinet_id=cabinet_id, at=at)
        return [self._signals.send(swap_workflow_id(o), signal, topic=topic, payload=payload) for o in order_ids]

    async def _on_event(
        self, topic: str, payload: bytes, cabinet_id: str, raw: dict[str, Any], event: CabinetEvent
    ) -> list[asyncio.Task[None]]:
        _check_cabinet_id(cabinet_id, event.cabinet_id)
        at = self._clock.bound(event.ts)

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
                await reconcile_event(session, slot, event, at)
            return True, workflow_id

        accepted, workflow_id = await self._transaction(work)
        if not accepted:
            self.stats.duplicates += 1
            return []
        if event.type in (EventType.DOOR_OPENED, EventType.DOOR_CLOSED):
            self.telemetry.door_event(cabinet_id, at)
        self.telemetry.forget_slots(cabinet_id)  # the event changed a slot behind telemetry's back
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
        self, topic: str, cabinet_id: str, raw: dict[str, Any], ack: CommandAck
    ) -> list[asyncio.Task[None]]:
        _check_cabinet_id(cabinet_id, ack.cabinet_id)
        acked_at = utcnow()
        commands, messages = table_of(DeviceCommand), table_of(DeviceMessage)
        # The ack is recorded as a device message (its unique key catches a redelivery) and on its command,
        # only if the command exists and was sent to this cabinet: one statement, no ORM objects. Acks come
        # in beside thousands of telemetry messages a second, and their round trip is the door's.
        known = select(
            commands.c.cabinet_id,
            literal(f"ack:{ack.command_id}"),
            literal("command_ack"),
            literal(topic[:200]),
            literal(raw, messages.c.payload.type),
            commands.c.workflow_id,
            literal(acked_at, messages.c.received_at.type),
        ).where(commands.c.id == ack.command_id, commands.c.cabinet_id == cabinet_id)
        insert = postgresql.insert if self._postgres else sqlite.insert
        record = (
            insert(messages)
            .from_select(
                ["cabinet_id", "message_id", "kind", "topic", "payload", "workflow_id", "received_at"],
                known,
            )
            .on_conflict_do_nothing(index_elements=["cabinet_id", "message_id"])
        )
        acknowledge = (
            commands.update()
            .where(commands.c.id == ack.command_id)
            .values(
                acked_at=acked_at,
                ok=ack.ok,
                error=ack.error[:200] if ack.error else None,
                result=ack.result.model_dump(mode="json") if ack.result else null(),
            )
            .returning(commands.c.sent_at)
        )

        async def work(session: AsyncSession) -> datetime | None:
            if self._postgres:
                # The insert as a CTE of the update: one statement, atomic without a transaction around it,
                # so autocommit spares the BEGIN and COMMIT round trips (the commit is as durable).
                await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
                recorded = record.returning(messages.c.cabinet_id).cte("recorded")
                sent_at = await session.scalar(acknowledge.where(commands.c.cabinet_id == recorded.c.cabinet_id))
            elif (await session.execute(record.returning(messages.c.id))).first() is not None:
                sent_at = await session.scalar(acknowledge)
            else:
                sent_at = None
            if sent_at is None:
                await self._refuse_unrecorded_ack(session, cabinet_id, ack.command_id)
            return sent_at

        sent_at = await self._transaction(work)
        if sent_at is None:
            self.stats.duplicates += 1
        else:
            self.metrics.command_round_trip.observe(max(0.0, (acked_at - as_utc(sent_at)).total_seconds()))
        return []  # no signal: the activity that sent the command waits for its ack itself

    async def _refuse_unrecorded_ack(self, session: AsyncSession, cabinet_id: str, command_id: str) -> None:
        """Why an ack was not recorded: Rejected when its cabinet or command is unknown or the command went
        to another cabinet; otherwise it was a duplicate, and this returns."""
        owner = await session.scalar(select(DeviceCommand.cabinet_id).where(DeviceCommand.id == command_id))
        if owner == cabinet_id:
            return
        await self._cabinet(session, cabinet_id)
        if owner is None:
            raise Rejected(f"ack for unknown command {command_id!r}")
        raise Rejected(f"ack for command {command_id!r}, which was sent to {owner}")

    async def _apply_battery_reports(self, batch: Sequence[tuple[str, bytes]]) -> list[asyncio.Task[None]]:
        """Validate a batch of packs' own reports, route those about reserved slots to their swaps and
        write the readings, in one transaction. Custody is never changed: only a swap moves a pack.
        Returns the signal deliveries it started. Never raises: what fails becomes a dead letter."""
        # The newest credible report per pack: a report is a snapshot, and a newer one of the same pack
        # says where it is now. Older ones (in the batch, or behind the watermark) are dropped; a forged
        # one (see authority.py) hides none of them.
        offered: dict[str, list[_PackReport]] = {}
        for topic, payload in batch:
            serial = parse_battery_topic(self.prefix, topic)
            try:
                if serial is None:
                    raise Rejected(f"not a battery topic under {self.prefix!r}")
                data = _load_json(payload)
                report = self._clock.bound_report(_parse_battery_report(serial, data))
            except Rejected as exc:
                await self._dead_letter(topic, payload, str(exc))
                continue
            if report.seq <= self._battery_seq.get(serial, -1):
                self.stats.stale += 1
                continue
            offered.setdefault(serial, []).append((topic, payload, data, report))
        if not offered:
            return []

        async def work(session: AsyncSession) -> _BatteryOutcome:
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
            routed: list[tuple[str, bytes, _Route]] = []
            duplicates = 0
            updates = []
            for topic, payload, data, report in latest.values():
                routes = _route_battery_report(report, reserved_at, reserved_holding)
                battery = batteries.get(report.serial)
                # Recorded when a swap hears of it, or when the pack is not ours: the trace an operator
                # follows. Other reports are routine readings, kept only as the pack's latest values.
                if routes or battery is None:
                    recorded = await self._record(
                        session,
                        report.cabinet_id or _NO_CABINET,
                        f"bat:{report.serial}:{report.seq}",
                        _BATTERY_REPORT,
                        topic,
                        data,
                        routes[0].workflow_id if routes else None,
                    )
                    if not recorded:
                        duplicates += 1
                        continue
                routed.extend((topic, payload, route) for route in routes)
                if battery is not None:
                    updates.append(battery_row(report.reading, as_utc(report.ts)))
            await write_battery_readings(session, updates)
            return _BatteryOutcome(routed, duplicates, latest, forged, stale)

        try:
            outcome = await self._transaction(work)
        except Exception as exc:
            log.exception("failed to apply %d battery reports", sum(map(len, offered.values())))
            for topic, payload, *_ in (report for reports in offered.values() for report in reports):
                await self._dead_letter(topic, payload, f"internal error: {exc!r}")
            return []
        routed, latest = outcome.routed, outcome.latest
        self.stats.duplicates += outcome.duplicates
        self.stats.stale += outcome.stale
        for topic, payload, reason in outcome.forged:
            self.metrics.forged_reports.inc()
            await self._dead_letter(topic, payload, reason)
        for serial, (*_, report) in latest.items():
            self._battery_seq[serial] = self._clock.bound_seq(report.seq)
        self.history.offer(
            [history_row(r.reading, as_utc(r.ts), r.cabinet_id, r.slot_no) for *_, r in latest.values()], []
        )
        return [
            self._signals.send(route.workflow_id, route.signal, topic=topic, payload=payload)
            for topic, payload, route in routed
        ]

    # ------------------------------------------------------------------------------------- database

    async def _relaxed_commit(self, session: AsyncSession) -> None:
        """On PostgreSQL, let this (telemetry) transaction commit without waiting for its WAL flush."""
        if self._postgres:
            await session.execute(text("SET LOCAL synchronous_commit TO OFF"))

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
                # Cancelled mid-statement (a COPY, say), the pool's rollback of the busy connection fails
                # and its error replaces the CancelledError: retrying would swallow the cancellation and
                # keep a stopping adapter writing forever.
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError from exc
                if loop.time() + delay > deadline:
                    raise
                log.warning("database unavailable (%s); retrying in %.2fs", exc.orig or exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _dead_letter(self, topic: str, payload: bytes, reason: str) -> None:
        """Keep a message that could not be accepted or routed, for an operator (at the next batch write:
        see dead_letters.py). Never raises."""
        self.dead_letters.reject(topic, payload, reason)


class _PeerConnectionLost(aiomqtt.MqttError):
    """This connection reconnects because another of the adapter's was lost (it is not lost itself)."""


def tune_gc_for_ingestion() -> None:
    """Set this (adapter) process's garbage collector for telemetry: thousands of messages a second
    each allocate a few dozen objects (the parsed report, its rows) that live until the next batch
    write, so with the default thresholds young collections run every few messages, find everything
    alive, and keep promoting it into full collections; the collector was a good part of what the
    parsing showed in profiles. Collections are made rarer, and what start-up created is frozen out of
    them."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(_GC_YOUNG_THRESHOLD, 50, 100)


async def run_adapter(settings: Settings) -> None:
    """The `adapter` process: connect to the database and Temporal, then run the adapter until
    cancelled."""
    tune_gc_for_ingestion()
    # Every write goes through `_transaction`, which retries on a dropped connection (the pool then
    # replaces it): no ping round trip before each of the thousands of transactions a minute.
    db = Database(settings.effective_database_url, pre_ping=False)
    try:
        temporal = await connect_temporal(settings)
        await DeviceAdapter(settings, db, temporal).run()
    finally:
        await db.dispose()
