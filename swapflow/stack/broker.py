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


async def run_broker(host: str, port: int) -> None:
    """Serve MQTT until cancelled."""
    broker = Broker(broker_config(host, port))
    await broker.start()
    try:
        await asyncio.Event().wait()
    finally:
        await broker.shutdown()
