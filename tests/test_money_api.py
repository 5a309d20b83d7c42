"""The money endpoints over HTTP, against the real database and the time-skipping server: wallet
top-ups, operator refunds, complaints that ops approve, the rider's view of a refund, finance's stuck
refunds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import update
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from swapflow.api.app import create_app
from swapflow.db.engine import Database
from swapflow.db.models import Refund, utcnow
from swapflow.payments.provider import PaymentMethod, refund_workflow_id
from swapflow.payments.refunds import RefundOrigin, swap_refund_id
from swapflow.settings import Settings
from swapflow.workflows.payment_models import RefundOutcome, RefundStart
from swapflow.workflows.refund import RefundWorkflow
from tests.money_harness import OTHER_RIDER, PRICE, RIDER, Money
from tests.swap_harness import running_worker


@pytest.fixture
async def money(db: Database, settings: Settings) -> Money:
    return await Money(db, settings).ready()


@pytest.fixture
async def api(temporal_env: WorkflowEnvironment, settings: Settings, db: Database) -> AsyncIterator[httpx.AsyncClient]:
    """The API in this test's event loop (so it can share the test's Temporal client), with a worker."""
    app = create_app(settings)
    app.state.settings, app.state.db = settings, db

    async def temporal() -> Client:
        return temporal_env.client

    app.state.temporal = temporal
    async with running_worker(temporal_env.client, settings, db), \
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
        yield client


async def refund_done(env: WorkflowEnvironment, refund_id: str) -> RefundOutcome:
    return await env.client.get_workflow_handle(refund_workflow_id(refund_id), result_type=RefundOutcome).result()


async def test_top_up_credits_the_wallet_once_per_idempotency_key(api: httpx.AsyncClient) -> None:
    first = await api.post(f"/v1/riders/{RIDER}/wallet/top-ups", json={"amount_minor": 5000},
                           headers={"Idempotency-Key": "t1"})
    again = await api.post(f"/v1/riders/{RIDER}/wallet/top-ups", json={"amount_minor": 5000},
                           headers={"Idempotency-Key": "t1"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["entry_id"] == again.json()["entry_id"]
    assert (await api.get(f"/v1/riders/{RIDER}/wallet")).json()["balance_minor"] == 5000


async def test_top_up_without_idempotency_key_is_a_422_problem(api: httpx.AsyncClient) -> None:
    response = await api.post(f"/v1/riders/{RIDER}/wallet/top-ups", json={"amount_minor": 5000})
    assert response.status_code == 422 and "Idempotency-Key" in response.json()["detail"]


async def test_operator_refund_is_followed_and_never_exceeds_the_capture(
        temporal_env: WorkflowEnvironment, api: httpx.AsyncClient, money: Money) -> None:
    order_id = await money.failed_after_charge()
    running = await api.post("/v1/refunds", json={"order_id": await money.charged(OTHER_RIDER), "reason": "early"},
                             headers={"Idempotency-Key": "r0"})
    assert running.status_code == 409 and running.json()["title"] == "Swap still running"
    part = await api.post("/v1/refunds", json={"order_id": order_id, "amount_minor": PRICE - 100, "reason": "slow"},
                          headers={"Idempotency-Key": "r1"})
    assert part.status_code == 201, part.json()
    too_much = await api.post("/v1/refunds", json={"order_id": order_id, "amount_minor": 101, "reason": "again"},
                              headers={"Idempotency-Key": "r2"})
    assert too_much.status_code == 409 and too_much.json()["title"] == "Refund refused"

    outcome = await refund_done(temporal_env, part.json()["id"])
    assert outcome.state == "succeeded"
    view = (await api.get(f"/v1/refunds/{part.json()['id']}")).json()
    assert (view["status"], view["amount_minor"], view["origin"]) == ("succeeded", PRICE - 100, "operator")
    assert view["expected_by"] is not None and view["final_at"] is not None


async def test_approved_complaint_refunds_the_swap(
        temporal_env: WorkflowEnvironment, api: httpx.AsyncClient, money: Money) -> None:
    await money.pays_by(RIDER, PaymentMethod.SANDBOX)
    order_id = await money.failed_after_charge()
    filed = await api.post("/v1/complaints", json={"rider_id": RIDER, "order_id": order_id, "reason": "pack was flat"})
    assert filed.status_code == 201 and filed.json()["status"] == "open"
    approved = await api.post(f"/v1/complaints/{filed.json()['id']}/approve")
    assert approved.status_code == 200 and approved.json()["status"] == "approved"
    refund_id = approved.json()["refund_id"]
    await api.post(f"/v1/complaints/{filed.json()['id']}/approve")  # approving twice opens nothing new
    assert (await refund_done(temporal_env, refund_id)).state == "succeeded"
    assert await money.count(Refund, Refund.order_id == order_id) == 1


async def test_failed_swap_shows_its_refund_and_finance_sees_one_stuck_past_its_time(
        temporal_env: WorkflowEnvironment, settings: Settings, api: httpx.AsyncClient, money: Money) -> None:
    order_id = await money.failed_after_charge()
    refund_id = swap_refund_id(order_id)
    await temporal_env.client.execute_workflow(
        RefundWorkflow.run, RefundStart(refund_id=refund_id, order_id=order_id, reason="swap failed",
                                        origin=RefundOrigin.SWAP_COMPENSATION),
        id=refund_workflow_id(refund_id), task_queue=settings.temporal_task_queue)
    swap = (await api.get(f"/v1/swaps/{order_id}")).json()
    assert (swap["refund"]["id"], swap["refund"]["status"]) == (refund_id, "succeeded")

    async with money.db.transaction() as session:  # as if it were still on its way, a day late
        await session.execute(update(Refund).where(Refund.id == refund_id).values(
            status="processing", expected_by=utcnow() - timedelta(days=1)))
    stuck = (await api.get("/v1/finance/refunds/stuck")).json()
    assert [r["id"] for r in stuck] == [refund_id]
