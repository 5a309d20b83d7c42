"""Heartbeat expiry: the cabinets whose heartbeats stopped are marked offline and their swaps told;
the gauges of cabinets online and commands outstanding are refreshed with the same sweep."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.devices import DeviceCommand
from swapflow.db.network import Cabinet
from swapflow.device_adapter.metrics import AdapterMetrics
from swapflow.device_adapter.presence import expire_silent_cabinets
from swapflow.device_adapter.signals import SignalSender
from swapflow.device_adapter.storage import Storage
from swapflow.device_adapter.telemetry import TelemetryBatch
from swapflow.domain.clock import utcnow
from swapflow.domain.network import PresenceCause
from swapflow.protocol.v1 import Channel, cabinet_topic
from swapflow.settings import Settings
from swapflow.workflows.device_contract import DeviceSignal, DeviceSignalKind
from swapflow.workflows.swap_contract import swap_workflow_id

log = logging.getLogger(__name__)


class HeartbeatSweep:
    """Expires silent cabinets. `listening_since` is the loop time since when this adapter has been
    subscribed (None: it is not), `last_heard` the loop time it last heard a cabinet."""

    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        telemetry: TelemetryBatch,
        signals: SignalSender,
        metrics: AdapterMetrics,
        *,
        listening_since: Callable[[], float | None],
        last_heard: Callable[[str], float],
    ) -> None:
        self._prefix = settings.mqtt.topic_prefix
        self._silence_s = settings.devices.heartbeat_interval_s * settings.devices.heartbeat_missed_limit
        self._storage = storage
        self._telemetry = telemetry
        self._signals = signals
        self._metrics = metrics
        self._listening_since = listening_since
        self._last_heard = last_heard

    async def sweep(self) -> None:
        """Mark offline the cabinets whose heartbeats stopped, tell their swaps, and refresh the gauges
        of cabinets online and commands outstanding."""
        loop = asyncio.get_running_loop()
        now = utcnow()
        heard_since = loop.time() - self._silence_s
        # Silence is only evidence once this adapter has listened for the whole window: after a restart,
        # cabinets whose last write is old have simply not been heard yet.
        listening_since = self._listening_since()
        listening = listening_since is not None and listening_since <= heard_since
        cutoff = now - timedelta(seconds=self._silence_s)

        async def work(session: AsyncSession) -> list[tuple[str, list[str]]]:
            expired = await expire_silent_cabinets(
                session, cutoff=cutoff, now=now, spare=lambda c: self._last_heard(c) > heard_since
            )
            return [(e.cabinet_id, e.order_ids) for e in expired]

        for cabinet_id, order_ids in await self._storage.transaction(work) if listening else []:
            log.info("cabinet %s missed its heartbeats for %.0fs: offline", cabinet_id, self._silence_s)
            self._metrics.presence_transitions.labels(PresenceCause.HEARTBEAT_EXPIRED.value).inc()
            self._telemetry.forget_slots(cabinet_id)
            message_id = f"state:{DeviceSignalKind.CABINET_OFFLINE.value}:expired:{now.isoformat()}"[:80]
            signal = DeviceSignal(
                message_id=message_id, kind=DeviceSignalKind.CABINET_OFFLINE, cabinet_id=cabinet_id, at=now
            )
            topic = cabinet_topic(self._prefix, cabinet_id, Channel.STATE)
            for order_id in order_ids:
                self._signals.send(swap_workflow_id(order_id), signal, topic=topic, payload=b"heartbeat expired")
        async with self._storage.sessions() as session:
            self._metrics.cabinets_online.set(
                await session.scalar(select(func.count()).select_from(Cabinet).where(Cabinet.online.is_(True))) or 0
            )
            self._metrics.commands_outstanding.set(
                await session.scalar(
                    select(func.count())
                    .select_from(DeviceCommand)
                    .where(DeviceCommand.acked_at.is_(None), DeviceCommand.deadline_at > now)
                )
                or 0
            )
