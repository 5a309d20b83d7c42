"""One way to connect to the MQTT broker, shared by the device adapter, the worker and the simulator."""

from __future__ import annotations

import ssl

import aiomqtt

from swapflow.settings import Settings


def mqtt_client(
    settings: Settings,
    identifier: str,
    *,
    will: aiomqtt.Will | None = None,
    keepalive: int = 30,
    clean_session: bool | None = None,
) -> aiomqtt.Client:
    """An unconnected aiomqtt client for the configured broker (use it with `async with`)."""
    endpoint = settings.mqtt_endpoint
    return aiomqtt.Client(
        hostname=endpoint.host,
        port=endpoint.port,
        username=endpoint.username,
        password=endpoint.password,
        identifier=identifier,
        will=will,
        keepalive=keepalive,
        clean_session=clean_session,
        tls_context=ssl.create_default_context() if endpoint.tls else None,
        max_queued_outgoing_messages=10_000,
    )
