"""Publishing commands to cabinets: one long-lived MQTT connection per process, re-established when
the broker goes away. The worker's door-opening activity sends through it (by way of the command
queue, swapflow/device_commands/queue.py, which also listens to acks on this connection)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable

import aiomqtt
from pydantic import ValidationError

from swapflow.infra.mqtt import mqtt_client
from swapflow.protocol.v1 import Channel, Command, CommandAck, cabinet_topic
from swapflow.settings import Settings

log = logging.getLogger(__name__)


class BrokerUnavailable(ConnectionError):
    """No broker connection within the wait; the caller's retry policy decides what next."""


class CommandPublisher:
    """Sends commands with QoS 1. Run `run()` as a task for the connection's lifetime. With `on_ack`, it
    also hears every cabinet's acks (QoS 0: a lost one only costs a resend) and passes them on."""

    def __init__(
        self, settings: Settings, *, name: str = "swapflow-commands", on_ack: Callable[[CommandAck], None] | None = None
    ) -> None:
        self.settings = settings
        self.identifier = f"{name}-{uuid.uuid4().hex[:8]}"
        self._client: aiomqtt.Client | None = None
        self._on_ack = on_ack
        self.connected = asyncio.Event()

    async def run(self) -> None:
        """Keep a connection open until cancelled, reconnecting with backoff."""
        delay = 0.5
        acks = cabinet_topic(self.settings.mqtt.topic_prefix, "+", Channel.ACKS)
        while True:
            try:
                async with mqtt_client(self.settings, self.identifier) as client:
                    if self._on_ack is not None:
                        await client.subscribe(acks, qos=0)
                    self._client = client
                    self.connected.set()
                    delay = 0.5
                    # The message iterator is also how aiomqtt reports a lost connection.
                    async for message in client.messages:
                        if self._on_ack is not None and message.topic.matches(acks):
                            self._ack(message.payload)
            except aiomqtt.MqttError as exc:
                log.warning("command publisher lost the broker (%s); reconnecting in %.1fs", exc, delay)
            finally:
                self.connected.clear()
                self._client = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    def _ack(self, payload: object) -> None:
        if self._on_ack is None:
            raise RuntimeError("an ack arrived at a command publisher that takes none")
        try:
            ack = CommandAck.model_validate_json(payload if isinstance(payload, bytes | bytearray | str) else b"")
        except ValidationError:
            return  # the device adapter dead-letters bad acks; here they only would have stopped a resend
        self._on_ack(ack)

    async def send(self, command: Command, *, wait_s: float = 5.0) -> None:
        """Publish a command to its cabinet's command topic."""
        try:
            async with asyncio.timeout(wait_s):
                await self.connected.wait()
        except TimeoutError as exc:
            raise BrokerUnavailable("no MQTT broker connection") from exc
        if self._client is None:
            raise BrokerUnavailable("MQTT broker connection lost")
        topic = cabinet_topic(self.settings.mqtt.topic_prefix, command.cabinet_id, Channel.COMMANDS)
        await self._client.publish(topic, command.model_dump_json(exclude_none=True), qos=1)
