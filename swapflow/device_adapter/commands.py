"""Publishing commands to cabinets: one long-lived MQTT connection per process, re-established when
the broker goes away. The worker's door-opening activity sends through it."""

from __future__ import annotations

import asyncio
import logging
import uuid

import aiomqtt

from swapflow.mqtt import mqtt_client
from swapflow.protocol.v1 import Channel, Command, cabinet_topic
from swapflow.settings import Settings

log = logging.getLogger(__name__)


class BrokerUnavailable(ConnectionError):
    """No broker connection within the wait; the caller's retry policy decides what next."""


class CommandPublisher:
    """Sends commands with QoS 1. Run `run()` as a task for the connection's lifetime."""

    def __init__(self, settings: Settings, *, name: str = "swapflow-commands") -> None:
        self.settings = settings
        self.identifier = f"{name}-{uuid.uuid4().hex[:8]}"
        self._client: aiomqtt.Client | None = None
        self.connected = asyncio.Event()

    async def run(self) -> None:
        """Keep a connection open until cancelled, reconnecting with backoff."""
        delay = 0.5
        while True:
            try:
                async with mqtt_client(self.settings, self.identifier) as client:
                    self._client = client
                    self.connected.set()
                    delay = 0.5
                    # The message iterator is how aiomqtt reports a lost connection.
                    async for _ in client.messages:
                        pass
            except aiomqtt.MqttError as exc:
                log.warning("command publisher lost the broker (%s); reconnecting in %.1fs", exc, delay)
            finally:
                self.connected.clear()
                self._client = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def send(self, command: Command, *, wait_s: float = 5.0) -> None:
        """Publish a command to its cabinet's command topic."""
        try:
            await asyncio.wait_for(self.connected.wait(), wait_s)
        except TimeoutError as exc:
            raise BrokerUnavailable("no MQTT broker connection") from exc
        assert self._client is not None
        topic = cabinet_topic(self.settings.mqtt_topic_prefix, command.cabinet_id, Channel.COMMANDS)
        await self._client.publish(topic, command.model_dump_json(exclude_none=True), qos=1)
