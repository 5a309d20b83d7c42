"""One way to connect to the MQTT broker, shared by the device adapter, the worker and the simulator."""

from __future__ import annotations

import asyncio
import math
import ssl
from collections.abc import Awaitable
from typing import TypeVar

import aiomqtt

from swapflow.identity.credentials import Login, client_login, service_client_id
from swapflow.settings import Settings

T = TypeVar("T")


class _Client(aiomqtt.Client):
    """aiomqtt's client, waiting for the broker's answers with asyncio.timeout. aiomqtt waits with
    asyncio.wait_for, which on Python 3.11 swallows a cancellation that lands as the answer arrives: a
    task cancelled in a publish or subscribe then runs on, and the loop around it outlives its shutdown."""

    async def _wait_for(self, fut: Awaitable[T], timeout: float | None) -> T:  # noqa: ASYNC109  (its override)
        if timeout is None:
            timeout = self.timeout
        try:
            async with asyncio.timeout(None if timeout == math.inf else timeout):
                return await fut
        except TimeoutError:
            raise aiomqtt.MqttError("Operation timed out") from None


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
    return _Client(
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
