"""Real stand-ins for the two payment providers, importable by any test: a localstripe server (PyPI) on a free
loopback port, and the WeChat Pay v3 fake from tests/wechat_fake.py; plus the settings that point swapflow at
them, the API app wired to a Temporal client, and a recording refund workflow.

Use: `from tests.payment_fakes import localstripe_url, wechat_fake, ...` in a test module (fixtures), then
`settings.updated(stripe=stripe_settings_values(localstripe_url), wechat=wechat_fake.settings_values())`.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe
from fastapi import FastAPI
from temporalio import workflow
from temporalio.client import Client

from swapflow.api.app import create_app
from swapflow.payments.provider import REFUND_NOTIFICATION_SIGNAL, ProviderRefund
from swapflow.settings import Settings
from tests.conftest import free_port
from tests.wechat_fake import WeChatPayFake

STRIPE_WEBHOOK_SECRET = "whsec_swapflow_test"


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"localstripe exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"localstripe did not listen on {port} within {timeout_s} s")


@pytest.fixture(scope="session")
def localstripe_url() -> Iterator[str]:
    """A localstripe server for the session (tests keep apart by using their own keys)."""
    port = free_port()
    executable = Path(sys.executable).parent / "localstripe"
    process = subprocess.Popen(
        [str(executable), "--port", str(port), "--from-scratch"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def stripe_settings_values(api_base: str) -> dict[str, Any]:
    """The `settings.stripe` fields of a merchant talking to localstripe."""
    return {
        "api_key": "sk_test_swapflow",
        "api_base": api_base,
        "full_api": False,
        "webhook_secret": STRIPE_WEBHOOK_SECRET,
        "timeout_s": 5.0,
        "publishable_key": "pk_test_swapflow",
        "js_url": f"{api_base}/js.stripe.com/v3/",  # localstripe's stand-in for Stripe.js
    }


def stripe_webhook(
    event_type: str,
    obj: dict[str, Any],
    *,
    timestamp: int | None = None,
    secret: str = STRIPE_WEBHOOK_SECRET,
    event_id: str | None = None,
) -> tuple[dict[str, str], bytes]:
    """Headers and body of a Stripe webhook event about `obj`, signed as Stripe signs them."""
    return signed_stripe_body(
        {
            "id": event_id or f"evt_{uuid.uuid4().hex[:24]}",
            "object": "event",
            "type": event_type,
            "api_version": "2024-06-20",
            "created": int(time.time()),
            "livemode": False,
            "data": {"object": obj},
        },
        timestamp=timestamp,
        secret=secret,
    )


def signed_stripe_body(
    content: Any, *, timestamp: int | None = None, secret: str = STRIPE_WEBHOOK_SECRET
) -> tuple[dict[str, str], bytes]:
    """Headers and body of a webhook call carrying `content` (of any shape) as JSON, signed as Stripe signs."""
    body = json.dumps(content)
    header = stripe.WebhookSignature.generate_signature_header(body, secret, timestamp=timestamp)
    return {"Stripe-Signature": header, "Content-Type": "application/json"}, body.encode()


@pytest.fixture
def wechat_fake() -> Iterator[WeChatPayFake]:
    """A fresh WeChat Pay v3 fake (own keys, own orders) on a free port."""
    fake = WeChatPayFake()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@asynccontextmanager
async def api_client(settings: Settings, temporal: Client) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """The API app (lifespan run) in this event loop, using `temporal` as its Temporal client."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):

        async def connect() -> Client:
            return temporal

        app.state.temporal = connect
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://swapflow.test") as client:
            yield client, app


@workflow.defn(name="RefundNotificationRecorder")
class RefundNotificationRecorder:
    """Stands in for the refund workflow: keeps every provider notification signalled to it."""

    def __init__(self) -> None:
        self._received: list[ProviderRefund] = []

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)

    @workflow.signal(name=REFUND_NOTIFICATION_SIGNAL)
    def notified(self, refund: ProviderRefund) -> None:
        self._received.append(refund)

    @workflow.query
    def received(self) -> list[ProviderRefund]:
        return self._received


async def wait_for_received(
    client: Client, workflow_id: str, count: int, timeout_s: float = 10.0
) -> list[ProviderRefund]:
    """What the recorder under `workflow_id` received, once it holds `count` notifications."""
    handle = client.get_workflow_handle(workflow_id)
    deadline = time.monotonic() + timeout_s
    while True:
        received = await handle.query(RefundNotificationRecorder.received)
        if len(received) >= count or time.monotonic() > deadline:
            return received
        await asyncio.sleep(0.05)


class LaggingProxy:
    """A TCP proxy in front of a server that can hold back the answer to one request: the request is passed
    on at once and the server acts, but the client times out first (a lost answer)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._lag: tuple[bytes, float] | None = None
        self._server: asyncio.Server | None = None

    def lag_next(self, request_line_prefix: str, seconds: float) -> None:
        """Hold back, by `seconds`, the answer to the next request whose first line starts with the prefix
        (e.g. "POST /v1/payment_intents ")."""
        self._lag = (request_line_prefix.encode(), seconds)

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        held = [0.0]  # lag owed to the next answer on this connection

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answers: bool) -> None:
            try:
                while chunk := await reader.read(65536):
                    if not answers and self._lag is not None and chunk.startswith(self._lag[0]):
                        held[0], self._lag = self._lag[1], None
                    if answers and held[0]:
                        await asyncio.sleep(held[0])
                        held[0] = 0.0
                    writer.write(chunk)
                    await writer.drain()
            except ConnectionError:
                pass
            finally:
                writer.close()

        await asyncio.gather(pipe(client_reader, upstream_writer, False), pipe(upstream_reader, client_writer, True))
