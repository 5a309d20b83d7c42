"""The embedded MQTT broker (amqtt), used when no SWAPFLOW_MQTT_URL is set. With device identity
enforced (SWAPFLOW_EMBEDDED_BROKER_AUTH, the default) it refuses unknown clients and keeps each cabinet
to its own topics (swapflow.stack.broker_auth); without, it is anonymous."""

from __future__ import annotations

import asyncio
from typing import Any

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import Session
from amqtt.utils import gen_client_id

from swapflow.settings import DeviceSettings, MqttSettings, Settings
from swapflow.stack.broker_auth import auth_plugins


def broker_config(host: str, port: int, plugins: dict[str, Any] | None = None) -> dict[str, Any]:
    """A TCP listener on host:port; anonymous unless `plugins` (see `auth_plugins`) say otherwise."""
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": plugins or {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }


class EmbeddedBroker(Broker):
    """amqtt's broker with the limits a device must stay within, and two fixes.

    amqtt 0.12 has no setting for a maximum message size, nor for the messages queued or in flight per
    client: a message from a client larger than `max_message_bytes` is dropped here (a cabinet's
    connection is not closed, as Mosquitto's `max_packet_size` would, but what it sends goes nowhere),
    and an offline client's queue keeps at most `max_queued_messages`. The in-flight window cannot be
    bounded without changing amqtt's protocol handler, so it is left as amqtt has it.

    On each CONNECT amqtt 0.12 replays retained messages for *every*
    client's subscriptions to the connecting session (and its loop over them can fail with 'dictionary
    changed size during iteration' when clients connect at once): only the session's own count. And it
    checks a client's credentials only after setting up the session of the client id it claims, so a
    refused CONNECT would still delete or take over that session: they are checked first."""

    def __init__(self, config: dict[str, Any], *, max_message_bytes: int, max_queued_messages: int) -> None:
        super().__init__(config)
        self._max_message_bytes = max_message_bytes
        self._max_queued_messages = max_queued_messages

    async def _broadcast_message(
        self, session: Session | None, topic: str | None, data: bytes | bytearray | None, force_qos: int | None = None
    ) -> None:
        if session is not None and data is not None and len(data) > self._max_message_bytes:
            self.logger.warning("dropped a message of %d bytes from %s on %s", len(data), session.client_id, topic)
            return
        await super()._broadcast_message(session, topic, data, force_qos)

    async def retain_message(
        self,
        source_session: Session | None,
        topic_name: str | None,
        data: bytes | bytearray | None,
        qos: int | None = None,
    ) -> None:
        if source_session is not None and data is not None and len(data) > self._max_message_bytes:
            return
        await super().retain_message(source_session, topic_name, data, qos)

    async def _retain_broadcast_message(self, broadcast: dict[str, Any], qos: int, target_session: Session) -> None:
        if target_session.retained_messages.qsize() >= self._max_queued_messages:
            self.logger.warning("queue of offline client %s full: dropped a message", target_session.client_id)
            return
        await super()._retain_broadcast_message(broadcast, qos, target_session)

    async def _initialize_client_session(
        self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str, remote_port: int
    ) -> tuple[BrokerProtocolHandler, Session]:
        try:
            handler, session = await BrokerProtocolHandler.init_from_connect(reader, writer, self.plugins_manager)
        except (AMQTTError, MQTTError, NoDataError) as exc:
            await writer.close()
            raise AMQTTError(f"no valid CONNECT from {remote_address}:{remote_port}: {exc}") from exc
        if not await self._authenticate(session, None):  # type: ignore[arg-type]  # the listener is unused
            session.parent = 0
            handler.attach(session, reader, writer)
            await handler.mqtt_connack_authorize(False)
            await writer.close()
            raise AMQTTError(f"refused {session.username!r} as client {session.client_id!r}")
        # From here as amqtt does it.
        if session.clean_session:
            if session.client_id:
                await self._delete_session(session.client_id)
            else:
                session.client_id = gen_client_id()
            session.parent = 0
        elif session.client_id in self._sessions:
            existing, _ = self._sessions[session.client_id]
            for name in ("will_flag", "will_message", "will_topic", "will_qos", "keep_alive", "username", "password"):
                setattr(existing, name, getattr(session, name))
            session = existing
            session.parent = 1
        else:
            session.parent = 0
        delay = self.config.get("timeout-disconnect-delay", 0)
        if session.keep_alive > 0 and isinstance(delay, int):
            session.keep_alive += delay
        return handler, session

    async def _publish_retained_messages_for_subscription(self, subscription: Any, session: Any) -> None:
        subscribers = self._subscriptions.get(subscription[0], ())
        if any(s.client_id == session.client_id for s, _ in list(subscribers)):
            await super()._publish_retained_messages_for_subscription(subscription, session)


def embedded_broker(
    host: str,
    port: int,
    plugins: dict[str, Any] | None = None,
    *,
    max_message_bytes: int = DeviceSettings.model_fields["device_max_message_bytes"].default,
    max_queued_messages: int = MqttSettings.model_fields["max_queued_messages"].default,
) -> EmbeddedBroker:
    """An embedded broker listening on host:port once started."""
    return EmbeddedBroker(
        broker_config(host, port, plugins), max_message_bytes=max_message_bytes, max_queued_messages=max_queued_messages
    )


def settings_plugins(settings: Settings) -> dict[str, Any] | None:
    """The identity plugins the settings ask for, or None for an anonymous broker."""
    if not settings.embedded_broker.auth:
        return None
    return auth_plugins(settings.effective_database_url, settings.mqtt.topic_prefix, [settings.mqtt.service_username])


async def run_broker(settings: Settings) -> None:
    """Serve MQTT on the embedded broker's port until cancelled, with the settings' identity plugins and
    limits."""
    broker = embedded_broker(
        "127.0.0.1",
        settings.embedded_broker.port,
        settings_plugins(settings),
        max_message_bytes=settings.devices.device_max_message_bytes,
        max_queued_messages=settings.mqtt.max_queued_messages,
    )
    await broker.start()
    try:
        await asyncio.Event().wait()
    finally:
        await broker.shutdown()
