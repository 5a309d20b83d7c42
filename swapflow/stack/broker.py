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

from swapflow.settings import Settings
from swapflow.stack.broker_auth import auth_plugins


def broker_config(host: str, port: int, plugins: dict[str, Any] | None = None) -> dict[str, Any]:
    """A TCP listener on host:port; anonymous unless `plugins` (see `auth_plugins`) say otherwise."""
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": plugins or {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }


class EmbeddedBroker(Broker):
    """amqtt's broker with two fixes. On each CONNECT amqtt 0.12 replays retained messages for *every*
    client's subscriptions to the connecting session (and its loop over them can fail with 'dictionary
    changed size during iteration' when clients connect at once): only the session's own count. And it
    checks a client's credentials only after setting up the session of the client id it claims, so a
    refused CONNECT would still delete or take over that session: they are checked first."""

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


def embedded_broker(host: str, port: int, plugins: dict[str, Any] | None = None) -> EmbeddedBroker:
    """An embedded broker listening on host:port once started."""
    return EmbeddedBroker(broker_config(host, port, plugins))


def settings_plugins(settings: Settings) -> dict[str, Any] | None:
    """The identity plugins the settings ask for, or None for an anonymous broker."""
    if not settings.embedded_broker_auth:
        return None
    return auth_plugins(settings.effective_database_url, settings.mqtt_topic_prefix, [settings.mqtt_service_username])


async def run_broker(host: str, port: int, plugins: dict[str, Any] | None = None) -> None:
    """Serve MQTT until cancelled."""
    broker = embedded_broker(host, port, plugins)
    await broker.start()
    try:
        await asyncio.Event().wait()
    finally:
        await broker.shutdown()
