"""Alerts reach their channels: signed webhooks, retried with backoff, every attempt in the delivery
log; IM-style channels get the body their template makes. A real HTTP receiver on a local port."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import uvicorn
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from temporalio.testing import WorkflowEnvironment

from swapflow.db.engine import Database
from swapflow.db.ops import AlertDelivery
from swapflow.ops.channels import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from swapflow.ops.config import WebhookChannel
from swapflow.settings import Settings
from swapflow.workflows.alert_evaluator import AlertEvaluatorWorkflow
from swapflow.workflows.alert_evaluator_contract import EvaluatorInput
from tests.conftest import free_port
from tests.swap_harness import running_worker
from tests.test_work_orders import CABINET, went_offline

SECRET = "s3cret"


@dataclass
class Receiver:
    """A webhook endpoint that fails its first `failures` requests with 503."""

    url: str
    failures: int = 1
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    async def handle(self, request: Request) -> Response:
        self.requests.append((dict(request.headers), await request.body()))
        return Response(status_code=503 if len(self.requests) <= self.failures else 204)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    port = free_port()
    found = Receiver(f"http://127.0.0.1:{port}/hook")
    server = uvicorn.Server(
        uvicorn.Config(
            Starlette(routes=[Route("/hook", found.handle, methods=["POST"])]),
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    yield found
    server.should_exit = True
    await task


async def deliveries_of(db: Database, channel: str, count: int) -> list[AlertDelivery]:
    for _ in range(300):
        async with db.sessions() as session:
            rows = (
                await session.scalars(
                    select(AlertDelivery).where(AlertDelivery.channel == channel).order_by(AlertDelivery.attempt)
                )
            ).all()
        if len(rows) >= count:
            return list(rows)
        await asyncio.sleep(0.1)
    raise AssertionError(f"only {len(rows)} deliveries to {channel}")


async def run_evaluator(
    env: WorkflowEnvironment, settings: Settings, db: Database, channel: str, attempts: int
) -> list[AlertDelivery]:
    await went_offline(db, CABINET, minutes_ago=5)
    async with running_worker(env.client, settings, db):
        handle = await env.client.start_workflow(
            AlertEvaluatorWorkflow.run,
            EvaluatorInput(interval_s=0.5, per_run=1000),
            id=f"evaluator-{settings.temporal.task_queue}",
            task_queue=settings.temporal.task_queue,
        )
        try:
            return await deliveries_of(db, channel, attempts)
        finally:
            await handle.terminate()


async def test_a_webhook_is_signed_and_retried_until_delivered(
    temporal_env: WorkflowEnvironment, settings: Settings, db: Database, receiver: Receiver
) -> None:
    channel = WebhookChannel(name="ops-hook", url=receiver.url, secret=SECRET)
    settings = settings.updated(ops={"offline_alert_after_s": 60.0, "webhooks": [channel]})
    log = await run_evaluator(temporal_env, settings, db, "ops-hook", 2)

    assert [(d.attempt, d.ok, d.status_code) for d in log] == [(1, False, 503), (2, True, 204)]
    assert len(receiver.requests) == 2
    for headers, body in receiver.requests:
        assert verify(SECRET, headers[TIMESTAMP_HEADER.lower()], body, headers[SIGNATURE_HEADER.lower()])
        assert json.loads(body)["kind"] == "cabinet_offline" and json.loads(body)["event"] == "opened"
    headers, body = receiver.requests[-1]
    assert not verify("another secret", headers[TIMESTAMP_HEADER.lower()], body, headers[SIGNATURE_HEADER.lower()])


async def test_an_im_channel_gets_the_body_its_template_makes(
    temporal_env: WorkflowEnvironment, settings: Settings, db: Database, receiver: Receiver
) -> None:
    receiver.failures = 0
    template = '{"msgtype": "text", "text": {"content": "[{{ alert.severity }}] {{ alert.message }}"}}'
    channel = WebhookChannel(name="im", url=receiver.url, secret=SECRET, template=template)
    settings = settings.updated(ops={"offline_alert_after_s": 60.0, "webhooks": [channel]})
    await run_evaluator(temporal_env, settings, db, "im", 1)

    _, body = receiver.requests[0]
    content = json.loads(body)["text"]["content"]
    assert content.startswith("[critical] cabinet cab-sh-001-1 offline since")
