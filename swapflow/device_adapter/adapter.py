"""The device adapter: the bridge from cabinets (MQTT, protocol v1) to the database and to the swap
workflows waiting for door and battery events. Command acks are recorded here; the activity that sent a
command hears its ack itself (swapflow/device_commands/queue.py). It also takes the packs' own
reports, which are the only evidence a command-only (legacy) cabinet's swaps leave.

It holds no state that a second copy would need: routing comes from the database (a slot's
reservation, a command's workflow, the slot a pack is in) and duplicates are caught by the unique key
of `device_messages`, so two adapters on one broker still deliver each event once. What it keeps in
memory (telemetry and battery report watermarks) only saves work.

`DeviceAdapter` composes the parts, each owning its state: `connections` reads the broker, `routing`
routes each message (its topic parsed once, `topics`), `handlers` a cabinet's state, events and acks,
`telemetry` and `battery_reports` their batches, `storage` the writes with retries, `dead_letters` what
could not be accepted, `signals` the signals to workflows, `heartbeats` the expiry of silent cabinets.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from dataclasses import asdict
from typing import Any

import temporalio.client
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.engine import Database
from swapflow.device_adapter.battery_reports import BatteryReports
from swapflow.device_adapter.clock import DeviceClock
from swapflow.device_adapter.connections import BrokerConnections
from swapflow.device_adapter.dead_letters import DeadLetters
from swapflow.device_adapter.handlers import CabinetMessages
from swapflow.device_adapter.heartbeats import HeartbeatSweep
from swapflow.device_adapter.ingest import HistoryBuffer, write_history
from swapflow.device_adapter.metrics import AdapterMetrics, AdapterStats
from swapflow.device_adapter.routing import Router
from swapflow.device_adapter.signals import SignalSender
from swapflow.device_adapter.storage import Storage
from swapflow.device_adapter.telemetry import TelemetryBatch
from swapflow.device_adapter.topics import parse_route
from swapflow.identity.credentials import service_client_id
from swapflow.infra.metrics import serve_metrics
from swapflow.infra.temporal import connect_temporal
from swapflow.settings import Settings

log = logging.getLogger(__name__)

_HISTORY_BATCH = 5_000  # history rows per transaction
_GC_YOUNG_THRESHOLD = 100_000  # allocations between young collections (default 700); see tune_gc_for_ingestion


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
        self.prefix = settings.mqtt.topic_prefix
        # A stable id: after a restart the broker hands over what it queued for this adapter meanwhile.
        self.client_id = service_client_id(settings.adapter.effective_client_id)
        self.stats = AdapterStats()
        self.metrics = metrics or AdapterMetrics()
        self._lanes = lanes
        self._telemetry_flush_s = telemetry_flush_s
        self._drain_timeout_s = drain_timeout_s
        self._stats_interval_s = stats_interval_s
        self._sweep_interval_s = sweep_interval_s or min(5.0, settings.devices.heartbeat_interval_s / 2)
        clock = DeviceClock(
            settings.devices.device_clock_skew_s, settings.devices.device_clock_max_age_s, self.metrics.clock_clamped
        )
        self.history = HistoryBuffer(settings.devices.telemetry_history_queue_rows, self.metrics)
        self.storage = Storage(db, retry_s=db_retry_s)
        self.dead_letters = DeadLetters(settings, self.metrics, self.storage, on_reject=self.stats.count_dead_letter)
        self._signals = SignalSender(
            temporal, self.dead_letters.reject, retry_for_s=signal_retry_s, on_delivered=self.stats.count_signal
        )
        self.telemetry = TelemetryBatch(
            clock,
            self.metrics,
            self.history,
            self._signals,
            self.storage,
            self.dead_letters.reject,
            on_stale=self.stats.count_stale,
        )
        self.battery_reports = BatteryReports(
            self.storage, clock, self.history, self._signals, self.dead_letters, self.metrics, self.stats
        )
        cabinet_messages = CabinetMessages(self.storage, clock, self.telemetry, self._signals, self.metrics, self.stats)
        self.router = Router(
            settings,
            self.telemetry,
            self.battery_reports,
            cabinet_messages,
            self.dead_letters,
            self.metrics,
            self.stats,
        )
        self.connections = BrokerConnections(
            settings,
            self.client_id,
            self.router.take,
            probe_interval_s=probe_interval_s,
            probe_timeout_s=probe_timeout_s,
        )
        self._heartbeats = HeartbeatSweep(
            settings,
            self.storage,
            self.telemetry,
            self._signals,
            self.metrics,
            listening_since=lambda: self.connections.listening_since,
            last_heard=self.router.last_heard,
        )

    @property
    def ready(self) -> asyncio.Event:
        """Set while subscribed to the broker (every connection)."""
        return self.connections.ready

    async def run(self) -> None:
        """Consume the broker until cancelled, reconnecting with backoff when it goes away. On
        cancellation, messages already taken from the broker are finished (bounded by
        `drain_timeout_s`) before returning."""
        workers = [asyncio.create_task(self.router.lane()) for _ in range(self._lanes)]
        workers.append(asyncio.create_task(self._telemetry_writer()))
        workers.append(asyncio.create_task(self._history_writer()))
        workers.append(asyncio.create_task(self._sweeper()))
        workers.append(asyncio.create_task(self._report_stats()))
        server = serve_metrics(self.metrics.registry, self.settings.adapter.metrics_port)
        try:
            await self.connections.run()
        finally:
            if server is not None:
                server.shutdown()
            try:
                async with asyncio.timeout(self._drain_timeout_s):
                    await self._drain()
            except TimeoutError:
                log.error("adapter stopped with %d messages unprocessed", self.router.queued)
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            await self._signals.drain(self._drain_timeout_s)
            await self.dead_letters.flush()  # those of signals that could not be delivered
            log.info("device adapter stopped: %s", asdict(self.stats))

    async def handle(self, topic: str, payload: bytes) -> None:
        """Process one message completely, signals included. Never raises for bad input: what cannot
        be accepted becomes a dead letter."""
        self.stats.messages += 1
        route = parse_route(self.prefix, topic)
        if route is None:
            self.dead_letters.reject(topic, payload, f"not a cabinet or battery topic under {self.prefix!r}")
        elif tasks := await self.router.process(route, payload):
            await asyncio.gather(*tasks)
        await self.dead_letters.flush()

    async def flush_history(self) -> None:
        """Write every history row waiting, in batches; each batch is one short transaction, so event
        writes interleave with them."""
        while len(self.history):
            readings, health = self.history.take(_HISTORY_BATCH)

            async def work(session: AsyncSession, r: list[Any] = readings, h: list[Any] = health) -> None:
                await self.storage.relaxed_commit(session)
                await write_history(session, r, h)

            await self.storage.transaction(work)
            self.metrics.history_rows.inc(len(readings) + len(health))

    async def sweep_presence(self) -> None:
        """Mark offline the cabinets whose heartbeats stopped, tell their swaps, and refresh the gauges
        of cabinets online and commands outstanding."""
        await self._heartbeats.sweep()

    async def _drain(self) -> None:
        await self.router.join()
        await self.telemetry.write_pending()
        await self.battery_reports.write_pending()
        await self.flush_history()
        await self.dead_letters.flush()

    async def _telemetry_writer(self) -> None:
        while True:
            await asyncio.sleep(self._telemetry_flush_s)
            await self.telemetry.write_pending()
            await self.battery_reports.write_pending()
            await self.dead_letters.flush()

    async def _history_writer(self) -> None:
        while True:
            await asyncio.sleep(self._telemetry_flush_s)
            try:
                await self.flush_history()
            except Exception:
                log.exception("failed to write telemetry history; %d rows dropped", len(self.history))
                self.history.take(len(self.history))

    async def _sweeper(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval_s)
            try:
                await self.sweep_presence()
            except Exception:
                log.exception("presence sweep failed")
            self.router.forget_idle()
            await self.dead_letters.expire_when_due()

    async def _report_stats(self) -> None:
        last: dict[str, int] = {}
        while True:
            await asyncio.sleep(self._stats_interval_s)
            now = asdict(self.stats)
            if now != last:
                log.info("device adapter: %s, signals pending %d", now, self._signals.pending)
                last = now


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
    # Every write goes through `Storage.transaction`, which retries on a dropped connection (the pool
    # then replaces it): no ping round trip before each of the thousands of transactions a minute.
    db = Database(settings.effective_database_url, pre_ping=False)
    try:
        temporal = await connect_temporal(settings)
        await DeviceAdapter(settings, db, temporal).run()
    finally:
        await db.dispose()
