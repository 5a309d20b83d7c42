"""One way to connect to the MQTT broker, shared by the device adapter, the worker and the simulator."""

from __future__ import annotations

import ssl

import aiomqtt

from swapflow.identity.credentials import Login, client_login, service_client_id
from swapflow.settings import Settings


def mqtt_client(
    settings: Settings,
    identifier: str,
    *,
    will: aiomqtt.Will | None = None,
    keepalive: int = 30,
    clean_session: bool | None = None,
    login: Login | None = None,
) -> aiomqtt.Client:
    """An unconnected aiomqtt client for the configured broker (use it with `async with`). It logs in
    with `login`, or as the platform's service account (swapflow.identity.credentials.client_login) under
    a client id of the platform's reserved prefix."""
    endpoint = settings.mqtt_endpoint
    if login is None:
        identifier = service_client_id(identifier)
        login = client_login(settings)
    return aiomqtt.Client(
        hostname=endpoint.host,
        port=endpoint.port,
        username=login.username if login else None,
        password=login.password if login else None,
        identifier=identifier,
        will=will,
        keepalive=keepalive,
        clean_session=clean_session,
        tls_context=ssl.create_default_context() if endpoint.tls else None,
        max_queued_outgoing_messages=10_000,
    )
