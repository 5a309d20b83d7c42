"""The adapter's broker connections: one for what swaps wait for (state, events, acks and the packs'
reports: QoS 1, a persistent session) and several for telemetry (QoS 0, clean sessions, a shared
subscription). Each reconnects with backoff; when one is lost the others subscribe again too, and a
connection that hears nothing, not even a probe it publishes to itself, counts as lost."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any

import aiomqtt

from swapflow.device_adapter.topics import CabinetRoute, Route, parse_route
from swapflow.infra.mqtt import mqtt_client
from swapflow.protocol.v1 import Channel, battery_topic, cabinet_topic
from swapflow.settings import Settings

log = logging.getLogger(__name__)

# Telemetry has its own connections: a backlog of telemetry at the broker or in the socket must never
# hold up the events and acks that swaps wait for (MQTT delivers one connection's messages in order).
_SWAP_PATH_CHANNELS = (Channel.STATE, Channel.EVENTS, Channel.ACKS)


class _PeerConnectionLost(aiomqtt.MqttError):
    """This connection reconnects because another of the adapter's was lost (it is not lost itself)."""


def _as_bytes(payload: Any) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return b"" if payload is None else str(payload).encode()


class BrokerConnections:
    """Reads the broker into `take`, each message with its topic parsed into a route."""

    def __init__(
        self,
        settings: Settings,
        client_id: str,
        take: Callable[[Route, bytes], None],
        *,
        probe_interval_s: float,
        probe_timeout_s: float,
    ) -> None:
        self._settings = settings
        self._prefix = settings.mqtt.topic_prefix
        self._client_id = client_id
        self._take = take
        self._probe_interval_s = probe_interval_s
        self._probe_timeout_s = probe_timeout_s
        self.ready = asyncio.Event()
        """Set while subscribed to the broker (every connection)."""
        self._events_subscribed = asyncio.Event()
        self._telemetry_subscribed = asyncio.Event()
        # Set when one of our connections is lost: the others may be half-open to a broker that went away
        # (amqtt does not always close its clients' sockets when it stops), so they subscribe again too.
        self._connection_lost = asyncio.Event()
        self._listening_since: float | None = None  # loop time since when the subscription has been up

    @property
    def listening_since(self) -> float | None:
        """Loop time since when telemetry has been subscribed (None: it is not)."""
        return self._listening_since

    async def run(self) -> None:
        """Keep the connections up until cancelled."""
        # An MQTT client reads about one message per turn of the event loop, so at thousands of
        # telemetry messages a second one connection is the limit; several share the subscription.
        connections = [asyncio.create_task(self._consume(telemetry=False))]
        connections += [
            asyncio.create_task(self._consume(telemetry=True, index=i))
            for i in range(self._settings.adapter.telemetry_connections)
        ]
        try:
            await asyncio.gather(*connections)
        finally:
            for connection in connections:
                connection.cancel()
            await asyncio.gather(*connections, return_exceptions=True)
            self.ready.clear()

    async def _consume(self, *, telemetry: bool, index: int = 0) -> None:
        """One broker connection: telemetry (QoS 0, a clean session: missed snapshots are not worth
        keeping), or everything else (QoS 1, a persistent session: the broker keeps events and acks for
        us across a short outage)."""
        delay = 0.5
        if telemetry:
            topic_filter = cabinet_topic(self._prefix, "+", Channel.TELEMETRY)
            if self._settings.adapter.telemetry_connections > 1:
                topic_filter = f"$share/swapflow-adapter/{topic_filter}"
            filters = [(topic_filter, 0)]
            client_id, subscribed = f"{self._client_id}-telemetry-{index}", self._telemetry_subscribed
        else:
            filters = [(cabinet_topic(self._prefix, "+", channel), 1) for channel in _SWAP_PATH_CHANNELS]
            filters.append((battery_topic(self._prefix, "+"), 1))
            client_id, subscribed = self._client_id, self._events_subscribed
        # A connection that stays up can still stop delivering: on amqtt another client connecting under
        # our client id takes over the session without disconnecting us. A probe we publish to ourselves
        # makes sure something comes in; silence through a probe counts as a lost connection.
        probe = f"{self._prefix}/adapter/{client_id}/probe"
        qos = filters[0][1]  # the probe travels as the connection's messages do
        while True:
            try:
                async with mqtt_client(self._settings, client_id, clean_session=not telemetry) as client:
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
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that
                # lands as the wait ends, and this loop would then outlive the adapter's shutdown.
                async with asyncio.timeout(self._probe_timeout_s):
                    await heard.wait()
            except TimeoutError:
                return
            await asyncio.sleep(self._probe_interval_s)

    async def _read(self, client: aiomqtt.Client, probe: str, heard: asyncio.Event, *, telemetry: bool) -> None:
        """Parse each message's topic into its route, once, and hand the message on."""
        async for message in client.messages:
            topic = message.topic.value
            heard.set()
            if topic == probe:
                continue
            # Some brokers (amqtt) also push retained messages matching other clients' filters.
            route = parse_route(self._prefix, topic)
            if route is None:
                continue
            if isinstance(route, CabinetRoute):
                if (route.channel is Channel.TELEMETRY) is not telemetry or route.channel is Channel.COMMANDS:
                    continue
            elif telemetry:
                continue
            self._take(route, _as_bytes(message.payload))
