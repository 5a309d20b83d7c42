"""Consuming and routing: each message taken from the broker (its topic already parsed into a route)
is counted, held to its device's rate and size, and handed to its path. Telemetry and the packs' own
reports go to their batches; a cabinet's state, events and acks, which swaps wait for, to a queue per
cabinet that the lanes serve cabinet by cabinet, so one cabinet's backlog never delays another's."""

from __future__ import annotations

import asyncio
import logging
import math
import time

from swapflow.device_adapter.battery_reports import BatteryReports
from swapflow.device_adapter.dead_letters import DeadLetters
from swapflow.device_adapter.fairness import FairQueue, RateLimiter
from swapflow.device_adapter.handlers import CabinetMessages
from swapflow.device_adapter.metrics import AdapterMetrics, AdapterStats
from swapflow.device_adapter.payloads import Rejected
from swapflow.device_adapter.telemetry import TelemetryBatch
from swapflow.device_adapter.topics import CabinetRoute, PackRoute, Route
from swapflow.protocol.v1 import Channel
from swapflow.settings import Settings

log = logging.getLogger(__name__)


class Router:
    """The per-cabinet queues, the rate limits, and when each cabinet was last heard."""

    def __init__(
        self,
        settings: Settings,
        telemetry: TelemetryBatch,
        battery_reports: BatteryReports,
        cabinet_messages: CabinetMessages,
        dead_letters: DeadLetters,
        metrics: AdapterMetrics,
        stats: AdapterStats,
    ) -> None:
        self._rate_per_s = settings.devices.device_rate_per_s
        self._max_message_bytes = settings.devices.device_max_message_bytes
        self._queue_size = settings.devices.device_queue_per_cabinet
        self._telemetry = telemetry
        self._battery_reports = battery_reports
        self._cabinet_messages = cabinet_messages
        self._dead_letters = dead_letters
        self._metrics = metrics
        self._stats = stats
        # Events, acks and states per cabinet, served round-robin; each device's rate is limited.
        self._queue: FairQueue[tuple[CabinetRoute, bytes]] = FairQueue(settings.devices.device_queue_per_cabinet)
        self._limiter = RateLimiter(
            settings.devices.device_rate_per_s, settings.devices.device_rate_burst, time.monotonic
        )
        # When this adapter last heard each cabinet (loop time): spares it from heartbeat expiry while its
        # telemetry waits for the next batch write.
        self._heard: dict[str, float] = {}

    @property
    def queued(self) -> int:
        """Messages waiting in the cabinets' queues."""
        return len(self._queue)

    def last_heard(self, cabinet_id: str) -> float:
        """Loop time this adapter last heard the cabinet (-inf: never)."""
        return self._heard.get(cabinet_id, -math.inf)

    def forget_idle(self) -> None:
        """Drop the rate limits of devices gone quiet."""
        self._limiter.forget_idle()

    def take(self, route: Route, payload: bytes) -> None:
        """Hand a message from the broker on without waiting: nothing one device sends may hold up the
        connection."""
        self._stats.messages += 1
        self._metrics.messages.labels(route.kind).inc()
        # What a device sends beyond its rate costs a counter; refusals are counted, not stored one by one.
        if not self._limiter.allow(route.key):
            self._dead_letters.reject(
                route.topic, b"", f"rate limit of {self._rate_per_s:g} messages/s exceeded: dropped"
            )
            if isinstance(route, CabinetRoute):
                self._dead_letters.flooding(route.cabinet_id)
            return
        if len(payload) > self._max_message_bytes:
            self._dead_letters.reject(
                route.topic, payload, f"message of {len(payload)} bytes exceeds the limit of {self._max_message_bytes}"
            )
            return
        if isinstance(route, PackRoute):
            # Batched like telemetry: packs report every few seconds, and one transaction per report
            # would keep SQLite's writer lock busy.
            self._battery_reports.offer(route, payload)
            return
        self._heard[route.cabinet_id] = asyncio.get_running_loop().time()
        # Telemetry takes its own path (batched, coalesced per cabinet) so events and acks, which swaps
        # wait for, never queue behind it.
        if route.channel is Channel.TELEMETRY:
            self._telemetry.receive(route, payload)
        # A queue per cabinet keeps its messages in order; cabinets take turns.
        elif not self._queue.put(route.cabinet_id, (route, payload)):
            self._dead_letters.reject(route.topic, b"", f"cabinet queue of {self._queue_size} messages full: dropped")

    async def lane(self) -> None:
        """Serve the cabinets' queues until cancelled."""
        while True:
            key, (route, payload) = await self._queue.get()
            try:
                # Signals go out on their own tasks: the lane moves on to the next message.
                await self.process(route, payload)
            finally:
                self._queue.done(key)

    async def join(self) -> None:
        """Wait until every queued message is processed."""
        await self._queue.join()

    async def process(self, route: Route, payload: bytes) -> list[asyncio.Task[None]]:
        """Parse, record and route one message; returns the signal deliveries it started. Never raises
        for bad input: what cannot be accepted becomes a dead letter."""
        try:
            if isinstance(route, PackRoute):
                return await self._battery_reports.apply([(route, payload)])
            if route.channel is Channel.TELEMETRY:
                self._telemetry.receive(route, payload)
                await self._telemetry.write_pending()
                return []
            return await self._cabinet_messages.handle(route, payload)
        except Rejected as exc:
            self._dead_letters.reject(route.topic, payload, str(exc))
        except Exception as exc:
            log.exception("failed to process a message on %s", route.topic)
            self._dead_letters.reject(route.topic, payload, f"internal error: {exc!r}")
        return []
