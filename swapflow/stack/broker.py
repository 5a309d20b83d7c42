"""The embedded MQTT broker (amqtt), used when no SWAPFLOW_MQTT_URL is set. With device identity
enforced (SWAPFLOW_EMBEDDED_BROKER_AUTH, the default) it refuses unknown clients and keeps each cabinet
to its own topics (swapflow.stack.broker_auth); without, it is anonymous."""

from __future__ import annotations

import asyncio
from typing import Any

from amqtt.broker import Broker

from swapflow.settings import Settings
from swapflow.stack.broker_auth import auth_plugins


def broker_config(host: str, port: int, plugins: dict[str, Any] | None = None) -> dict[str, Any]:
    """A TCP listener on host:port; anonymous unless `plugins` (see `auth_plugins`) say otherwise."""
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": plugins or {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }


class EmbeddedBroker(Broker):
    """amqtt's broker with one fix: on each CONNECT amqtt 0.12 replays retained messages for *every*
    client's subscriptions to the connecting session (and its loop over them can fail with 'dictionary
    changed size during iteration' when clients connect at once). Only the session's own count."""

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
