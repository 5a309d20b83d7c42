"""The embedded MQTT broker (amqtt), used when no SWAPFLOW_MQTT_URL is set."""

from __future__ import annotations

import asyncio
from typing import Any

from amqtt.broker import Broker


def broker_config(host: str, port: int) -> dict[str, Any]:
    """An anonymous TCP listener on host:port."""
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }


class EmbeddedBroker(Broker):
    """amqtt's broker with one fix: on each CONNECT amqtt 0.12 replays retained messages for *every*
    client's subscriptions to the connecting session (and its loop over them can fail with 'dictionary
    changed size during iteration' when clients connect at once). Only the session's own count."""

    async def _publish_retained_messages_for_subscription(self, subscription: Any, session: Any) -> None:
        subscribers = self._subscriptions.get(subscription[0], ())
        if any(s.client_id == session.client_id for s, _ in list(subscribers)):
            await super()._publish_retained_messages_for_subscription(subscription, session)


def embedded_broker(host: str, port: int) -> EmbeddedBroker:
    """An embedded broker listening on host:port once started."""
    return EmbeddedBroker(broker_config(host, port))


async def run_broker(host: str, port: int) -> None:
    """Serve MQTT until cancelled."""
    broker = embedded_broker(host, port)
    await broker.start()
    try:
        await asyncio.Event().wait()
    finally:
        await broker.shutdown()
