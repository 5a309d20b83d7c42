"""Whole swaps paid through the real payment SDKs, on the saga's scene (real worker, adapter, simulated
cabinet, broker, database): WeChat Pay v3 against the local v3 fake (the rider confirms the order in the
app), Stripe against localstripe (a saved card, authorized then captured). A paid swap completes and books
the money; an unconfirmed WeChat order opens no door and is closed; a failed swap is refunded once, with
the provider, until the provider says the money is back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import stripe
from sqlalchemy import select
from temporalio.testing import WorkflowEnvironment

from swapflow.db.devices import DeviceCommand
from swapflow.db.engine import Database
from swapflow.db.money import Payment
from swapflow.domain.swaps import SwapStage, SwapStatus
from swapflow.payments.provider import PaymentMethod
from swapflow.payments.stripe import KEY
from swapflow.payments.wechat import out_trade_no
from swapflow.settings import Settings
from swapflow.workflows.swap_contract import SwapProgress, swap_workflow_id
from tests.money_harness import pays_by as rider_pays_by
from tests.ops_harness import bearer, rider_token
from tests.payment_fakes import (  # noqa: F401  (fixtures)
    api_client,
    localstripe_url,
    stripe_settings_values,
    wechat_fake,
)
from tests.swap_harness import running_cabinet, running_worker, swap_refund_outcome
from tests.test_swap_saga import CABINET, RIDER, Scene, assert_invariants, count, ledger_kinds
from tests.wechat_fake import WeChatPayFake

OPENID = "o-rider-sh-0001"
CARD = "pm_card_visa"


@pytest.fixture
def settings(settings: Settings, wechat_fake: WeChatPayFake, localstripe_url: str) -> Settings:
    """The saga's short device bounds, both providers configured, and a pending charge asked about often."""
    return settings.updated(
        wechat=wechat_fake.settings_values(),
        stripe=stripe_settings_values(localstripe_url),
        swap={
            "command_ack_timeout_s": 1.5,
            "return_insert_timeout_s": 20.0,
            "charged_take_timeout_s": 20.0,
            "offline_grace_s": 20.0,
        },
        payments={"payment_poll_interval_s": 0.2, "payment_pending_timeout_s": 6.0},
    )


@pytest.fixture
async def scene(temporal_env: WorkflowEnvironment, settings: Settings, db: Database) -> AsyncIterator[Scene]:
    async with (
        running_worker(temporal_env.client, settings, db),
        running_cabinet(temporal_env.client, settings, db, CABINET) as cabinet,
    ):
        with temporal_env.auto_time_skipping_disabled():
            yield Scene(temporal_env, settings, db, cabinet)


@pytest.fixture
def localstripe(localstripe_url: str) -> stripe.StripeClient:
    return stripe.StripeClient(
        "sk_test_swapflow", base_addresses={"api": localstripe_url}, http_client=stripe.HTTPXClient()
    )


async def pays_by(scene: Scene, method: PaymentMethod, payer: str) -> None:
    await rider_pays_by(scene.db, RIDER, method, payer)


def charge_key(order_id: str) -> str:
    return f"swap:{order_id}:charge"


async def payment(scene: Scene, order_id: str) -> Payment | None:
    async with scene.db.sessions() as session:
        return await session.scalar(select(Payment).where(Payment.key == charge_key(order_id)))


async def until_payment(scene: Scene, order_id: str, status: str, timeout_s: float = 15) -> Payment:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        row = await payment(scene, order_id)
        if row is not None and row.status == status:
            return row
        assert asyncio.get_running_loop().time() < deadline, f"payment is {row and row.status}, not {status}"
        await asyncio.sleep(0.05)


async def swap_through(scene: Scene, order_id: str) -> None:
    await scene.insert(order_id, await scene.rider_pack())
    await scene.take(order_id)


async def fail_at_the_return(scene: Scene, order_id: str) -> SwapProgress:
    """The rider walks away from the open return door: the swap fails after taking the money."""
    await scene.until_stage(order_id, SwapStage.RETURN_DOOR_OPEN)
    await scene.skip(scene.settings.swap.return_insert_timeout_s + 1)
    return await scene.env.client.get_workflow_handle(swap_workflow_id(order_id), result_type=SwapProgress).result()


# ---- WeChat Pay v3 ----


async def test_wechat_rider_confirms_the_order_in_the_app_and_the_swap_completes(
    scene: Scene, wechat_fake: WeChatPayFake
) -> None:
    await pays_by(scene, PaymentMethod.WECHAT, OPENID)
    order_id, handle = await scene.start()
    await until_payment(scene, order_id, "pending")
    order = wechat_fake.orders[out_trade_no(charge_key(order_id))]
    assert (order.amount, order.openid) == (600, OPENID)
    wechat_fake.pay(out_trade_no(charge_key(order_id)))
    await swap_through(scene, order_id)
    result = await handle.result()
    assert result.status == SwapStatus.COMPLETED, result
    assert (await until_payment(scene, order_id, "captured")).amount_minor == 600
    assert await ledger_kinds(scene.db, order_id) == ["swap_charge", "swap_revenue", "commission_accrual"]
    await assert_invariants(scene.db)


async def test_wechat_order_the_rider_never_confirms_is_closed_and_no_door_opens(
    scene: Scene, wechat_fake: WeChatPayFake
) -> None:
    await pays_by(scene, PaymentMethod.WECHAT, OPENID)
    order_id, handle = await scene.start()
    result = await handle.result()
    assert (result.status, result.failure_reason) == (SwapStatus.FAILED, "payment_declined")
    assert wechat_fake.orders[out_trade_no(charge_key(order_id))].state == "CLOSED"
    assert await count(scene.db, DeviceCommand) == 0
    assert await ledger_kinds(scene.db, order_id) == []
    await assert_invariants(scene.db)


async def test_wechat_swap_answers_the_app_what_opens_the_pay_sheet_while_the_payment_waits_for_the_rider(
    scene: Scene, wechat_fake: WeChatPayFake
) -> None:
    await pays_by(scene, PaymentMethod.WECHAT, OPENID)
    async with api_client(scene.settings, scene.env.client) as (api, _):
        api.headers.update(bearer(await rider_token(scene.db, RIDER)))
        started = await api.post(
            "/v1/swaps", json={"rider_id": RIDER, "cabinet_id": CABINET}, headers={"Idempotency-Key": "wx-swap"}
        )
        assert started.status_code == 201, started.json()
        payment = started.json()["payment"]
        assert payment["status"] == "pending"
        order = wechat_fake.pay_sheet_opens(payment["client_params"])
        assert (order.out_trade_no, order.amount) == (out_trade_no(charge_key(started.json()["id"])), 600)
        seen = (await api.get(f"/v1/swaps/{started.json()['id']}")).json()
    assert (seen["stage"], seen["payment"]) == (SwapStage.RESERVED, payment)  # no door opens before it is paid


async def test_wechat_swap_paid_in_the_app_goes_on_and_shows_no_pay_sheet_any_more(
    scene: Scene, wechat_fake: WeChatPayFake
) -> None:
    await pays_by(scene, PaymentMethod.WECHAT, OPENID)
    async with api_client(scene.settings, scene.env.client) as (api, _):
        api.headers.update(bearer(await rider_token(scene.db, RIDER)))
        started = await api.post(
            "/v1/swaps", json={"rider_id": RIDER, "cabinet_id": CABINET}, headers={"Idempotency-Key": "wx-swap"}
        )
        order_id = started.json()["id"]
        wechat_fake.pay(wechat_fake.pay_sheet_opens(started.json()["payment"]["client_params"]).out_trade_no)
        await swap_through(scene, order_id)
        handle = scene.env.client.get_workflow_handle(swap_workflow_id(order_id), result_type=SwapProgress)
        result = await handle.result()
        seen = (await api.get(f"/v1/swaps/{order_id}")).json()
    assert result.status == SwapStatus.COMPLETED, result
    assert (seen["payment"]["status"], seen["payment"]["client_params"]) == ("captured", None)


async def test_failed_wechat_swap_is_refunded_once_and_settled_when_wechat_notifies_the_refund(
    scene: Scene, wechat_fake: WeChatPayFake
) -> None:
    await pays_by(scene, PaymentMethod.WECHAT, OPENID)
    order_id, _ = await scene.start()
    await until_payment(scene, order_id, "pending")
    wechat_fake.pay(out_trade_no(charge_key(order_id)))
    assert (await fail_at_the_return(scene, order_id)).status == SwapStatus.FAILED
    deadline = asyncio.get_running_loop().time() + 15
    while not wechat_fake.refunds:  # the refund workflow submits it to WeChat, which keeps it processing
        assert asyncio.get_running_loop().time() < deadline, "no refund reached WeChat"
        await asyncio.sleep(0.05)
    [(out_refund_no, refund)] = wechat_fake.refunds.items()
    assert (refund.out_trade_no, refund.amount) == (out_trade_no(charge_key(order_id)), 600)
    wechat_fake.settle_refund(out_refund_no, "SUCCESS")  # a business day later, WeChat says so:
    headers, body = wechat_fake.notification("REFUND.SUCCESS", wechat_fake.refund_resource(out_refund_no))
    async with api_client(scene.settings, scene.env.client) as (api, _):
        assert (await api.post("/v1/payments/wechat/notify", content=body, headers=headers)).status_code == 204
    outcome = await swap_refund_outcome(scene.env.client, order_id)
    assert (outcome.state, outcome.amount_minor, outcome.attempts) == ("succeeded", 600, 1)
    assert await ledger_kinds(scene.db, order_id) == ["swap_charge", "swap_refund", "refund_settled"]
    await assert_invariants(scene.db)


# ---- Stripe ----


async def test_stripe_rider_swaps_on_a_saved_card_authorized_then_captured(
    scene: Scene, localstripe: stripe.StripeClient
) -> None:
    await pays_by(scene, PaymentMethod.STRIPE, CARD)
    order_id, handle = await scene.start()
    await swap_through(scene, order_id)
    result = await handle.result()
    assert result.status == SwapStatus.COMPLETED, result
    row = await until_payment(scene, order_id, "captured")
    assert row.provider_ref is not None
    intent = await localstripe.v1.payment_intents.retrieve_async(row.provider_ref)
    assert (intent.status, intent.amount, intent.metadata.to_dict()[KEY]) == ("succeeded", 600, charge_key(order_id))
    assert await ledger_kinds(scene.db, order_id) == ["swap_charge", "swap_revenue", "commission_accrual"]
    await assert_invariants(scene.db)


async def test_failed_stripe_swap_is_refunded_once_on_the_card(scene: Scene, localstripe: stripe.StripeClient) -> None:
    await pays_by(scene, PaymentMethod.STRIPE, CARD)
    order_id, _ = await scene.start()
    assert (await fail_at_the_return(scene, order_id)).status == SwapStatus.FAILED
    outcome = await swap_refund_outcome(scene.env.client, order_id)
    assert (outcome.state, outcome.amount_minor, outcome.attempts) == ("succeeded", 600, 1)
    row = await payment(scene, order_id)
    assert row is not None and row.provider_ref is not None
    refunds = await localstripe.v1.refunds.list_async(params={"payment_intent": row.provider_ref})
    assert [refund.amount for refund in refunds.data] == [600]
    assert await ledger_kinds(scene.db, order_id) == ["swap_charge", "swap_refund", "refund_settled"]
    await assert_invariants(scene.db)
