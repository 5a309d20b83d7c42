"""WeChat Pay v3 through the real `wechatpayv3` SDK against a local fake of its endpoints that checks the
merchant's request signatures and signs its answers (public-key mode): orders, closing, refunds and their
statuses, the trade bill, lost answers, and the notify endpoint (verified, decrypted, deduplicated)."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from sqlalchemy import func, select
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from swapflow.activities.payments import PaymentActivities
from swapflow.db.engine import Database
from swapflow.db.money import Payment, PaymentNotification
from swapflow.infra.temporal import connect_temporal
from swapflow.payments.notifications import NotificationRejected
from swapflow.payments.provider import (
    ChargeRequest,
    PaymentMethod,
    PaymentProvider,
    PaymentStatus,
    ProviderDeclined,
    ProviderPayment,
    ProviderTimeout,
    ProviderUnavailable,
    RefundExceedsCapture,
    RefundRequest,
    RefundStatus,
    refund_key,
)
from swapflow.payments.registry import providers_from_settings
from swapflow.payments.wechat import WeChatPayProvider, out_refund_no, out_trade_no
from swapflow.settings import Settings
from swapflow.workflows.refund_contract import refund_workflow_id
from swapflow.workflows.swap_contract import PaymentOutcomeUnknownError
from tests.conftest import free_port
from tests.payment_fakes import (
    RefundNotificationRecorder,
    api_client,
    wait_for_received,
    wechat_fake,  # noqa: F401  (fixture)
)
from tests.wechat_fake import WeChatPayFake, private_pem

NOTIFY = "/v1/payments/wechat/notify"


@pytest.fixture
def wechat_settings(settings: Settings, wechat_fake: WeChatPayFake) -> Settings:
    return settings.updated(wechat=wechat_fake.settings_values())


@pytest.fixture
def provider(wechat_settings: Settings) -> WeChatPayProvider:
    return WeChatPayProvider(wechat_settings)


def charge_request(amount: int = 600) -> ChargeRequest:
    return ChargeRequest(
        key=f"swap:{uuid.uuid4().hex}:charge",
        amount_minor=amount,
        currency="CNY",
        rider_id="rider-sh-0001",
        payer="o-rider-openid-0001",
    )


async def paid(provider: WeChatPayProvider, fake: WeChatPayFake, amount: int = 600) -> ProviderPayment:
    request = charge_request(amount)
    await provider.charge(request)
    fake.pay(out_trade_no(request.key))
    payment = await provider.find_payment(request.key)
    assert payment is not None
    return payment


def refund_request(payment: ProviderPayment, amount: int) -> RefundRequest:
    return RefundRequest(key=refund_key(uuid.uuid4().hex), payment=payment, amount_minor=amount, reason="swap failed")


# ---- payments ----


def test_provider_implements_the_payment_provider_interface(provider: WeChatPayProvider) -> None:
    assert isinstance(provider, PaymentProvider)
    assert provider.method is PaymentMethod.WECHAT


async def test_charge_creates_an_order_pending_for_the_rider_with_signed_app_parameters(
    provider: WeChatPayProvider, wechat_fake: WeChatPayFake
) -> None:
    request = charge_request()
    payment = await provider.charge(request)
    assert payment.status is PaymentStatus.PENDING
    order = wechat_fake.orders[out_trade_no(request.key)]
    assert (order.amount, order.openid, order.attach) == (600, "o-rider-openid-0001", request.key)
    params = payment.client_params
    assert params is not None and params["package"] == f"prepay_id={order.prepay_id}"
    message = f"{params['appId']}\n{params['timeStamp']}\n{params['nonceStr']}\n{params['package']}\n"
    wechat_fake.merchant_key.public_key().verify(
        base64.b64decode(params["paySign"]), message.encode(), padding.PKCS1v15(), hashes.SHA256()
    )
    assert wechat_fake.bad_signatures == 0


async def test_order_the_rider_paid_is_found_captured(provider: WeChatPayProvider, wechat_fake: WeChatPayFake) -> None:
    request = charge_request()
    await provider.charge(request)
    assert (await provider.find_payment(request.key)).status is PaymentStatus.PENDING  # type: ignore[union-attr]
    order = wechat_fake.pay(out_trade_no(request.key))
    payment = await provider.find_payment(request.key)
    assert payment is not None
    assert (payment.status, payment.payment_id, payment.amount_minor) == (
        PaymentStatus.CAPTURED,
        order.transaction_id,
        600,
    )
    assert (await provider.capture(request.key)).status is PaymentStatus.CAPTURED


async def test_charge_again_with_the_same_key_creates_no_second_order(
    provider: WeChatPayProvider, wechat_fake: WeChatPayFake
) -> None:
    request = charge_request()
    first = await provider.charge(request)
    again = await provider.charge(request)
    assert again.client_params and first.client_params
    assert again.client_params["package"] == first.client_params["package"]
    wechat_fake.pay(out_trade_no(request.key))
    assert (await provider.charge(request)).status is PaymentStatus.CAPTURED
    assert wechat_fake.created_orders == 1


async def test_charge_without_openid_is_declined(provider: WeChatPayProvider) -> None:
    with pytest.raises(ProviderDeclined):
        await provider.charge(charge_request().model_copy(update={"payer": None}))


async def test_unknown_order_and_refund_are_not_found(provider: WeChatPayProvider) -> None:
    assert await provider.find_payment("swap:nobody:charge") is None
    assert await provider.find_refund(refund_key("nobody")) is None


async def test_close_abandons_an_unpaid_order(provider: WeChatPayProvider, wechat_fake: WeChatPayFake) -> None:
    request = charge_request()
    await provider.charge(request)
    closed = await provider.close(request.key)
    assert closed.status is PaymentStatus.CLOSED
    assert wechat_fake.orders[out_trade_no(request.key)].state == "CLOSED"


async def test_close_of_an_order_the_rider_already_paid_answers_it_captured(
    provider: WeChatPayProvider, wechat_fake: WeChatPayFake
) -> None:
    payment = await paid(provider, wechat_fake)
    assert (await provider.close(payment.key)).status is PaymentStatus.CAPTURED


# ---- refunds ----


@pytest.mark.parametrize(
    ("back_office", "status"),
    [("SUCCESS", RefundStatus.SUCCEEDED), ("CLOSED", RefundStatus.CLOSED), ("ABNORMAL", RefundStatus.ABNORMAL)],
)
async def test_refund_is_processing_until_wechat_settles_it(
    provider: WeChatPayProvider, wechat_fake: WeChatPayFake, back_office: str, status: RefundStatus
) -> None:
    payment = await paid(provider, wechat_fake)
    request = refund_request(payment, 600)
    submitted = await provider.refund(request)
    assert (submitted.status, submitted.amount_minor, submitted.payment_id) == (
        RefundStatus.PROCESSING,
        600,
        payment.payment_id,
    )
    wechat_fake.settle_refund(out_refund_no(request.key), back_office)
    found = await provider.find_refund(request.key)
    assert found is not None and found.status is status
    assert (found.succeeded_at is not None) == (status is RefundStatus.SUCCEEDED)


async def test_refund_again_with_the_same_key_refunds_once(
    provider: WeChatPayProvider, wechat_fake: WeChatPayFake
) -> None:
    payment = await paid(provider, wechat_fake)
    request = refund_request(payment, 200)
    first, again = await provider.refund(request), await provider.refund(request)
    assert first.refund_id == again.refund_id
    assert len(wechat_fake.refunds) == 1


async def test_refund_beyond_what_is_left_of_the_capture_is_refused_by_our_guard(
    provider: WeChatPayProvider, wechat_fake: WeChatPayFake
) -> None:
    payment = await paid(provider, wechat_fake)
    with pytest.raises(RefundExceedsCapture):
        await provider.refund(refund_request(payment.model_copy(update={"refunded_minor": 500}), 200))
    assert wechat_fake.refunds == {}


# ---- faults ----


async def test_lost_answer_after_the_order_was_created_is_a_timeout_and_the_retry_creates_no_second_order(
    provider: WeChatPayProvider, wechat_fake: WeChatPayFake
) -> None:
    request = charge_request()
    wechat_fake.delay_next_answer(3.0)
    with pytest.raises(ProviderTimeout):
        await provider.charge(request)
    found = await provider.find_payment(request.key)
    assert found is not None and found.status is PaymentStatus.PENDING
    wechat_fake.pay(out_trade_no(request.key))
    assert (await provider.charge(request)).status is PaymentStatus.CAPTURED
    assert wechat_fake.created_orders == 1


async def test_lost_answer_to_an_order_then_the_retry_keeps_the_app_parameters_of_the_same_order(
    wechat_settings: Settings, db: Database, wechat_fake: WeChatPayFake
) -> None:
    settings = wechat_settings.updated(payments={"payment_poll_interval_s": 0.05, "payment_pending_timeout_s": 8.0})
    payments = PaymentActivities(db, providers_from_settings(settings, db), settings)
    key = f"topup:{uuid.uuid4().hex[:20]}:charge"
    async with db.transaction() as session:
        session.add(
            Payment(
                key=key,
                rider_id="rider-sh-0001",
                method="wechat",
                amount_minor=600,
                currency="CNY",
                status="initiated",
                payer="o-rider-openid-0001",
            )
        )

    async def record() -> Payment:
        async with db.sessions() as session:
            found = await session.scalar(select(Payment).where(Payment.key == key))
        assert found is not None
        return found

    wechat_fake.delay_next_answer(3.0, request="POST /v3/pay/transactions/jsapi")  # the order is made, its answer lost
    with pytest.raises(PaymentOutcomeUnknownError):
        await ActivityEnvironment().run(payments.collect, await record())
    retry = asyncio.create_task(ActivityEnvironment().run(payments.collect, await record()))
    deadline = asyncio.get_running_loop().time() + 5
    while not (await record()).client_params:
        assert asyncio.get_running_loop().time() < deadline, "the retry kept no app parameters"
        await asyncio.sleep(0.05)
    params = (await record()).client_params or {}
    assert wechat_fake.pay_sheet_opens(params).out_trade_no == out_trade_no(key)
    wechat_fake.pay(out_trade_no(key))
    assert (await retry).status is PaymentStatus.CAPTURED
    assert wechat_fake.created_orders == 1


async def test_lost_answer_to_a_refund_then_the_retry_refunds_once(
    provider: WeChatPayProvider, wechat_fake: WeChatPayFake
) -> None:
    payment = await paid(provider, wechat_fake)
    request = refund_request(payment, 600)
    wechat_fake.delay_next_answer(3.0)
    with pytest.raises(ProviderTimeout):
        await provider.refund(request)
    assert (await provider.refund(request)).status is RefundStatus.PROCESSING
    assert len(wechat_fake.refunds) == 1


async def test_system_error_is_unavailable_and_a_business_error_is_declined(
    provider: WeChatPayProvider, wechat_fake: WeChatPayFake
) -> None:
    wechat_fake.fail_next(500, "SYSTEM_ERROR")
    with pytest.raises(ProviderUnavailable):
        await provider.charge(charge_request())
    wechat_fake.fail_next(429, "FREQUENCY_LIMITED")
    with pytest.raises(ProviderUnavailable):
        await provider.charge(charge_request())
    wechat_fake.fail_next(400, "PARAM_ERROR")
    with pytest.raises(ProviderDeclined):
        await provider.charge(charge_request())
    assert wechat_fake.created_orders == 0


async def test_unreachable_gateway_is_unavailable(wechat_settings: Settings) -> None:
    provider = WeChatPayProvider(wechat_settings.updated(wechat={"gateway_url": f"http://127.0.0.1:{free_port()}"}))
    with pytest.raises(ProviderUnavailable):
        await provider.find_payment("swap:x:charge")


async def test_answer_not_signed_by_wechat_is_rejected(provider: WeChatPayProvider, wechat_fake: WeChatPayFake) -> None:
    request = charge_request()
    await provider.charge(request)
    wechat_fake.platform_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(ProviderUnavailable, match="signature"):
        await provider.find_payment(request.key)


async def test_request_not_signed_by_the_merchant_is_refused_by_wechat(
    wechat_settings: Settings, wechat_fake: WeChatPayFake
) -> None:
    unknown = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # a key WeChat does not know
    provider = WeChatPayProvider(wechat_settings.updated(wechat={"private_key": private_pem(unknown)}))
    with pytest.raises(ProviderDeclined, match="SIGN_ERROR"):
        await provider.charge(charge_request())
    assert wechat_fake.bad_signatures == 1


# ---- statement ----


async def test_statement_lists_the_days_charges_and_refunds_under_our_keys(
    provider: WeChatPayProvider, wechat_fake: WeChatPayFake
) -> None:
    payment = await paid(provider, wechat_fake, amount=1234)
    request = refund_request(payment, 234)
    await provider.refund(request)
    wechat_fake.settle_refund(out_refund_no(request.key), "SUCCESS")
    lines = await provider.statement(datetime.now(UTC).date())
    assert [(line.kind, line.key, line.amount_minor) for line in lines] == [
        ("charge", payment.key, 1234),
        ("refund", request.key, -234),
    ]


# ---- notifications ----


@pytest.fixture
async def recorder(temporal_env: WorkflowEnvironment, settings: Settings) -> AsyncIterator[WorkflowEnvironment]:
    async with Worker(
        temporal_env.client,
        task_queue=settings.temporal.task_queue,
        workflows=[RefundNotificationRecorder],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        yield temporal_env


async def notifications(db: Database) -> int:
    async with db.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(PaymentNotification)) or 0)


async def test_notification_is_verified_and_decrypted(provider: WeChatPayProvider, wechat_fake: WeChatPayFake) -> None:
    payment = await paid(provider, wechat_fake)
    headers, body = wechat_fake.notification(
        "TRANSACTION.SUCCESS", wechat_fake.order_resource(out_trade_no(payment.key))
    )
    note = provider.verify_notification(headers, body)
    assert (note.event_type, note.key) == ("TRANSACTION.SUCCESS", payment.key)
    assert note.payload["resource"]["transaction_id"] == payment.payment_id


async def test_payment_notification_is_recorded_once(
    wechat_settings: Settings,
    provider: WeChatPayProvider,
    wechat_fake: WeChatPayFake,
    db: Database,
    temporal_env: WorkflowEnvironment,
) -> None:
    payment = await paid(provider, wechat_fake)
    headers, body = wechat_fake.notification(
        "TRANSACTION.SUCCESS", wechat_fake.order_resource(out_trade_no(payment.key))
    )
    async with api_client(wechat_settings, temporal_env.client) as (api, _):
        first = await api.post(NOTIFY, content=body, headers=headers)
        again = await api.post(NOTIFY, content=body, headers=headers)
    assert (first.status_code, again.status_code) == (204, 204)
    async with db.sessions() as session:
        rows = (await session.scalars(select(PaymentNotification))).all()
    assert [(row.provider, row.key, row.status) for row in rows] == [("wechat", payment.key, "captured")]


async def test_stale_notification_is_rejected(
    wechat_settings: Settings,
    provider: WeChatPayProvider,
    wechat_fake: WeChatPayFake,
    db: Database,
    temporal_env: WorkflowEnvironment,
) -> None:
    payment = await paid(provider, wechat_fake)
    headers, body = wechat_fake.notification(
        "TRANSACTION.SUCCESS",
        wechat_fake.order_resource(out_trade_no(payment.key)),
        timestamp=int(datetime.now(UTC).timestamp()) - 600,
    )
    async with api_client(wechat_settings, temporal_env.client) as (api, _):
        response = await api.post(NOTIFY, content=body, headers=headers)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "FAIL" and "stale" in response.json()["message"]
    assert await notifications(db) == 0


@pytest.mark.parametrize(
    ("event_type", "resource"),
    [
        ("TRANSACTION.SUCCESS", [{"attach": "swap:x:charge"}]),
        ("REFUND.SUCCESS", "refund*swap-x"),
        ("TRANSACTION.SUCCESS", {"out_trade_no": "sfx", "attach": 42}),
    ],
    ids=["resource-list", "resource-string", "attach-number"],
)
async def test_signed_notification_of_an_unexpected_shape_is_a_400_fail_recorded_once(
    wechat_settings: Settings,
    wechat_fake: WeChatPayFake,
    db: Database,
    temporal_env: WorkflowEnvironment,
    event_type: str,
    resource: object,
) -> None:
    headers, body = wechat_fake.notification(event_type, resource)
    async with api_client(wechat_settings, temporal_env.client) as (api, _):
        first = await api.post(NOTIFY, content=body, headers=headers)
        again = await api.post(NOTIFY, content=body, headers=headers)
    assert (first.status_code, again.status_code) == (400, 400)
    assert first.headers["content-type"] == "application/problem+json"
    assert (first.json()["title"], first.json()["code"]) == ("Malformed notification", "FAIL")
    async with db.sessions() as session:
        rows = (await session.scalars(select(PaymentNotification))).all()
    assert [(row.provider, row.event_type, row.key, row.status) for row in rows] == [
        ("wechat", event_type, None, "malformed")
    ]
    assert rows[0].payload["error"] == first.json()["detail"]


async def test_notification_signed_with_another_key_is_rejected(
    wechat_settings: Settings, wechat_fake: WeChatPayFake, db: Database, temporal_env: WorkflowEnvironment
) -> None:
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    headers, body = wechat_fake.notification(
        "TRANSACTION.SUCCESS", {"out_trade_no": "x", "attach": "swap:x:charge"}, signing_key=forger
    )
    async with api_client(wechat_settings, temporal_env.client) as (api, _):
        response = await api.post(NOTIFY, content=body, headers=headers)
    assert response.status_code == 401
    assert response.json()["code"] == "FAIL"
    assert await notifications(db) == 0


async def test_notification_encrypted_with_another_key_is_rejected(
    provider: WeChatPayProvider, wechat_fake: WeChatPayFake
) -> None:
    headers, body = wechat_fake.notification("TRANSACTION.SUCCESS", {"out_trade_no": "x"}, apiv3_key="0" * 32)
    with pytest.raises(NotificationRejected):
        provider.verify_notification(headers, body)


async def test_refund_notification_signals_the_refund_workflow_with_the_re_read_state(
    wechat_settings: Settings,
    provider: WeChatPayProvider,
    wechat_fake: WeChatPayFake,
    db: Database,
    recorder: WorkflowEnvironment,
    settings: Settings,
) -> None:
    payment = await paid(provider, wechat_fake)
    refund_id = uuid.uuid4().hex
    request = RefundRequest(key=refund_key(refund_id), payment=payment, amount_minor=600, reason="swap failed")
    await provider.refund(request)
    workflow_id = refund_workflow_id(refund_id)
    await recorder.client.start_workflow(
        RefundNotificationRecorder.run, id=workflow_id, task_queue=settings.temporal.task_queue
    )
    headers, body = wechat_fake.notification("REFUND.SUCCESS", wechat_fake.refund_resource(out_refund_no(request.key)))
    wechat_fake.settle_refund(out_refund_no(request.key), "SUCCESS")  # settled after the message was built
    async with api_client(wechat_settings, recorder.client) as (api, _):
        assert (await api.post(NOTIFY, content=body, headers=headers)).status_code == 204
        assert (await api.post(NOTIFY, content=body, headers=headers)).status_code == 204
    received = await wait_for_received(recorder.client, workflow_id, 1)
    assert [(r.key, r.status) for r in received] == [(request.key, RefundStatus.SUCCEEDED)]
    async with db.sessions() as session:
        row = await session.scalar(select(PaymentNotification))
    assert row is not None and row.workflow_id == workflow_id
    await recorder.client.get_workflow_handle(workflow_id).terminate()


async def test_refund_notification_without_a_workflow_is_recorded_and_answered(
    wechat_settings: Settings,
    provider: WeChatPayProvider,
    wechat_fake: WeChatPayFake,
    db: Database,
    temporal_env: WorkflowEnvironment,
) -> None:
    payment = await paid(provider, wechat_fake)
    request = refund_request(payment, 100)
    await provider.refund(request)
    headers, body = wechat_fake.notification("REFUND.SUCCESS", wechat_fake.refund_resource(out_refund_no(request.key)))
    async with api_client(wechat_settings, temporal_env.client) as (api, _):
        assert (await api.post(NOTIFY, content=body, headers=headers)).status_code == 204
    async with db.sessions() as session:
        row = await session.scalar(select(PaymentNotification))
    assert row is not None and (row.key, row.workflow_id) == (request.key, None)


async def test_notification_whose_signal_failed_is_not_recorded_and_its_retry_gets_through(
    wechat_settings: Settings,
    provider: WeChatPayProvider,
    wechat_fake: WeChatPayFake,
    db: Database,
    recorder: WorkflowEnvironment,
    settings: Settings,
) -> None:
    payment = await paid(provider, wechat_fake)
    refund_id = uuid.uuid4().hex
    request = RefundRequest(key=refund_key(refund_id), payment=payment, amount_minor=600, reason="swap failed")
    await provider.refund(request)
    await recorder.client.start_workflow(
        RefundNotificationRecorder.run, id=refund_workflow_id(refund_id), task_queue=settings.temporal.task_queue
    )
    headers, body = wechat_fake.notification("REFUND.SUCCESS", wechat_fake.refund_resource(out_refund_no(request.key)))
    async with api_client(wechat_settings, recorder.client) as (api, app):
        working = app.state.temporal
        gone = settings.updated(temporal={"address": f"127.0.0.1:{free_port()}"})

        async def unreachable():  # a Temporal frontend that is not there
            return await connect_temporal(gone, wait_s=0)

        app.state.temporal = unreachable
        assert (await api.post(NOTIFY, content=body, headers=headers)).status_code == 503
        assert await notifications(db) == 0
        app.state.temporal = working
        assert (await api.post(NOTIFY, content=body, headers=headers)).status_code == 204
    assert len(await wait_for_received(recorder.client, refund_workflow_id(refund_id), 1)) == 1
    assert await notifications(db) == 1
    await recorder.client.get_workflow_handle(refund_workflow_id(refund_id)).terminate()


async def test_notify_without_wechat_configured_is_a_404_fail(
    settings: Settings, temporal_env: WorkflowEnvironment
) -> None:
    async with api_client(settings, temporal_env.client) as (api, _):
        response = await api.post(NOTIFY, content=b"{}")
    assert response.status_code == 404 and response.json()["code"] == "FAIL"
