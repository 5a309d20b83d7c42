"""The money endpoints over HTTP, against the real database and the time-skipping server: wallets
(top-ups in tests/test_wallet_top_ups.py), operator refunds, complaints that ops approve, the rider's view
of a refund, finance's stuck refunds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import update
from temporalio.testing import WorkflowEnvironment

from swapflow.db.engine import Database
from swapflow.db.money import Refund, SandboxRefund
from swapflow.domain.clock import utcnow
from swapflow.domain.ops import OperatorRole
from swapflow.payments.provider import PaymentMethod, ProviderRefund, RefundExceedsCapture, RefundRequest
from swapflow.payments.refunds import RefundOrigin, charge_key, swap_refund_id
from swapflow.settings import Settings
from swapflow.workflows.refund import RefundWorkflow
from swapflow.workflows.refund_contract import RefundOutcome, RefundStart, refund_workflow_id
from tests.api_harness import app_sharing
from tests.money_harness import OTHER_RIDER, PRICE, RIDER, Money
from tests.ops_harness import admin_headers, bearer, operator_token, rider_token
from tests.swap_harness import running_worker


@pytest.fixture
async def money(db: Database, settings: Settings) -> Money:
    return await Money(db, settings).ready()


@pytest.fixture
async def api(temporal_env: WorkflowEnvironment, settings: Settings, db: Database) -> AsyncIterator[httpx.AsyncClient]:
    """The API in this test's event loop (so it can share the test's Temporal client), with a worker."""
    app = app_sharing(settings, db, temporal_env.client)
    async with (
        running_worker(temporal_env.client, settings, db),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://api", headers=await admin_headers(db)
        ) as client,
    ):
        yield client


async def refund_done(env: WorkflowEnvironment, refund_id: str) -> RefundOutcome:
    return await env.client.get_workflow_handle(refund_workflow_id(refund_id), result_type=RefundOutcome).result()


async def test_top_up_without_idempotency_key_is_a_422_problem(api: httpx.AsyncClient) -> None:
    response = await api.post(f"/v1/riders/{RIDER}/wallet/top-ups", json={"amount_minor": 5000})
    assert response.status_code == 422 and "Idempotency-Key" in response.json()["detail"]


async def test_operator_refund_is_followed_and_never_exceeds_the_capture(
    temporal_env: WorkflowEnvironment, api: httpx.AsyncClient, money: Money
) -> None:
    order_id = await money.failed_after_charge()
    running = await api.post(
        "/v1/refunds",
        json={"order_id": await money.charged(OTHER_RIDER), "reason": "early"},
        headers={"Idempotency-Key": "r0"},
    )
    assert running.status_code == 409 and running.json()["title"] == "Swap still running"
    part = await api.post(
        "/v1/refunds",
        json={"order_id": order_id, "amount_minor": PRICE - 100, "reason": "slow"},
        headers={"Idempotency-Key": "r1"},
    )
    assert part.status_code == 201, part.json()
    too_much = await api.post(
        "/v1/refunds",
        json={"order_id": order_id, "amount_minor": 101, "reason": "again"},
        headers={"Idempotency-Key": "r2"},
    )
    assert too_much.status_code == 409 and too_much.json()["title"] == "Refund refused"

    outcome = await refund_done(temporal_env, part.json()["id"])
    assert outcome.state == "succeeded"
    view = (await api.get(f"/v1/refunds/{part.json()['id']}")).json()
    assert (view["status"], view["amount_minor"], view["origin"]) == ("succeeded", PRICE - 100, "operator")
    assert view["expected_by"] is not None and view["final_at"] is not None


@pytest.mark.parametrize("amount_minor", [PRICE // 4, None], ids=["partial", "full"])
async def test_one_refund_request_sent_four_times_at_once_opens_one_refund_and_answers_it_to_each(
    temporal_env: WorkflowEnvironment, api: httpx.AsyncClient, money: Money, amount_minor: int | None
) -> None:
    order_id = await money.failed_after_charge()
    body = {"order_id": order_id, "reason": "slow", **({"amount_minor": amount_minor} if amount_minor else {})}
    answers = await asyncio.gather(
        *(api.post("/v1/refunds", json=body, headers={"Idempotency-Key": "once"}) for _ in range(4))
    )

    assert sorted(a.status_code for a in answers) == [200, 200, 200, 201], [a.json() for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    assert await money.count(Refund, Refund.order_id == order_id) == 1
    assert (await refund_done(temporal_env, answers[0].json()["id"])).state == "succeeded"


async def test_two_refunds_asked_at_once_that_together_exceed_the_capture_open_one_and_refuse_the_other(
    temporal_env: WorkflowEnvironment, api: httpx.AsyncClient, money: Money
) -> None:
    order_id = await money.failed_after_charge()
    body = {"order_id": order_id, "amount_minor": PRICE - 200, "reason": "slow"}
    answers = await asyncio.gather(
        *(api.post("/v1/refunds", json=body, headers={"Idempotency-Key": key}) for key in ("desk", "phone"))
    )

    assert sorted(a.status_code for a in answers) == [201, 409]
    opened = next(a.json() for a in answers if a.status_code == 201)
    assert (await refund_done(temporal_env, opened["id"])).state == "succeeded"
    assert await money.count(SandboxRefund) == 1  # only the one that fits reached the provider


async def test_the_sandbox_refuses_the_second_of_two_concurrent_refunds_that_together_exceed_the_capture(
    money: Money,
) -> None:
    captured = await money.sandbox.find_payment(charge_key(await money.charged()))
    assert captured is not None
    asks = [
        RefundRequest(key=f"refund:race-{n}", payment=captured, amount_minor=PRICE - 200, reason="race")
        for n in range(2)
    ]
    answers = await asyncio.gather(*(money.sandbox.refund(ask) for ask in asks), return_exceptions=True)

    assert sorted(type(a).__name__ for a in answers) == [ProviderRefund.__name__, RefundExceedsCapture.__name__]
    after = await money.sandbox.find_payment(captured.key)
    assert after is not None and after.refunded_minor == PRICE - 200


async def test_approved_complaint_refunds_the_swap(
    temporal_env: WorkflowEnvironment, api: httpx.AsyncClient, money: Money
) -> None:
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
    temporal_env: WorkflowEnvironment, settings: Settings, api: httpx.AsyncClient, money: Money
) -> None:
    order_id = await money.failed_after_charge()
    refund_id = swap_refund_id(order_id)
    await temporal_env.client.execute_workflow(
        RefundWorkflow.run,
        RefundStart(
            refund_id=refund_id, order_id=order_id, reason="swap failed", origin=RefundOrigin.SWAP_COMPENSATION
        ),
        id=refund_workflow_id(refund_id),
        task_queue=settings.temporal.task_queue,
    )
    swap = (await api.get(f"/v1/swaps/{order_id}")).json()
    assert (swap["refund"]["id"], swap["refund"]["status"]) == (refund_id, "succeeded")

    async with money.db.transaction() as session:  # as if it were still on its way, a day late
        await session.execute(
            update(Refund)
            .where(Refund.id == refund_id)
            .values(status="processing", expected_by=utcnow() - timedelta(days=1))
        )
    stuck = (await api.get("/v1/finance/refunds/stuck")).json()
    assert [r["id"] for r in stuck] == [refund_id]


# ---- who may call the money endpoints ----


async def test_a_rider_sees_their_own_wallet_but_another_riders_does_not_exist_for_them(
    api: httpx.AsyncClient, money: Money
) -> None:
    rider = bearer(await rider_token(money.db, RIDER))
    await money.wallet_rider(500)
    assert (await api.get(f"/v1/riders/{RIDER}/wallet", headers=rider)).json()["balance_minor"] == 500
    other = await api.get(f"/v1/riders/{OTHER_RIDER}/wallet", headers=rider)
    assert (other.status_code, other.json()["title"]) == (404, "Unknown rider")


async def test_money_endpoints_without_a_token_are_401_problems(api: httpx.AsyncClient) -> None:
    for path in (f"/v1/riders/{RIDER}/wallet", "/v1/finance/refunds/stuck", "/v1/pricing/coupons"):
        response = await api.get(path, headers={"Authorization": ""})
        assert (response.status_code, response.json()["title"]) == (401, "Unauthorized"), path


async def test_finance_reports_are_for_finance_accounts_not_operators(api: httpx.AsyncClient, money: Money) -> None:
    operator = bearer(await operator_token(money.db, "op-sh", OperatorRole.OPERATOR, ["SH"]))
    finance = bearer(await operator_token(money.db, "fin", OperatorRole.FINANCE, ["SH"]))
    assert (await api.get("/v1/finance/refunds/stuck", headers=operator)).status_code == 403
    assert (await api.get("/v1/finance/refunds/stuck", headers=finance)).status_code == 200


async def test_a_rider_files_a_complaint_but_only_a_city_lead_or_finance_approves_it(
    api: httpx.AsyncClient, money: Money
) -> None:
    rider = bearer(await rider_token(money.db, RIDER))
    operator = bearer(await operator_token(money.db, "op-sh", OperatorRole.OPERATOR, ["SH"]))
    filed = await api.post(
        "/v1/complaints",
        headers=rider,
        json={"rider_id": RIDER, "order_id": await money.failed_after_charge(), "reason": "flat"},
    )
    assert filed.status_code == 201
    for caller in (rider, operator):
        assert (await api.post(f"/v1/complaints/{filed.json()['id']}/approve", headers=caller)).status_code == 403


async def test_an_operator_does_not_see_refunds_of_riders_in_other_cities(
    temporal_env: WorkflowEnvironment, api: httpx.AsyncClient, money: Money
) -> None:
    order_id = await money.failed_after_charge()
    opened = await api.post(
        "/v1/refunds", json={"order_id": order_id, "reason": "slow"}, headers={"Idempotency-Key": "city"}
    )
    assert opened.status_code == 201
    elsewhere = bearer(await operator_token(money.db, "op-ber", OperatorRole.OPERATOR, ["BER"]))
    here = bearer(await operator_token(money.db, "op-sh", OperatorRole.OPERATOR, ["SH"]))
    assert (await api.get(f"/v1/refunds/{opened.json()['id']}", headers=elsewhere)).status_code == 404
    assert (await api.get(f"/v1/refunds/{opened.json()['id']}", headers=here)).status_code == 200
    await refund_done(temporal_env, opened.json()["id"])


async def test_prices_and_coupons_are_changed_by_admins_only(api: httpx.AsyncClient, money: Money) -> None:
    finance = bearer(await operator_token(money.db, "fin", OperatorRole.FINANCE, ["SH"]))
    coupon = {"code": "ADMINONLY", "kind": "percent", "value": 1000}
    assert (await api.post("/v1/pricing/coupons", json=coupon, headers=finance)).status_code == 403
    assert (await api.post("/v1/pricing/coupons", json=coupon)).status_code == 201  # the admin's
    assert [c["code"] for c in (await api.get("/v1/pricing/coupons", headers=finance)).json()] == ["ADMINONLY"]
