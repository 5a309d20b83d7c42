"""Stripe through the real `stripe` SDK (StripeClient) against localstripe on loopback: authorize, capture,
cancel, partial and full refunds, a declined card, our own guards (refund limit, one charge per key), the
day's balance transactions, and the webhook endpoint (signature accepted, rejected, stale, duplicate)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import stripe
from sqlalchemy import func, select
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from swapflow.db.engine import Database
from swapflow.db.money import PaymentNotification
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
from swapflow.payments.stripe import KEY, StripeProvider
from swapflow.settings import Settings
from swapflow.workflows.refund_contract import refund_workflow_id
from tests.conftest import free_port
from tests.payment_fakes import (
    LaggingProxy,
    RefundNotificationRecorder,
    api_client,
    localstripe_url,  # noqa: F401  (fixture)
    signed_stripe_body,
    stripe_settings_values,
    stripe_webhook,
    wait_for_received,
)

WEBHOOK = "/v1/payments/stripe/webhook"
CARD, DECLINED_CARD = "pm_card_visa", "pm_card_chargeCustomerFail"  # localstripe: 4242…, 0341 (declined on charge)


@pytest.fixture
def stripe_settings(settings: Settings, localstripe_url: str) -> Settings:
    return settings.updated(stripe=stripe_settings_values(localstripe_url))


@pytest.fixture
def provider(stripe_settings: Settings) -> StripeProvider:
    return StripeProvider(stripe_settings)


@pytest.fixture
def localstripe(localstripe_url: str) -> stripe.StripeClient:
    """A plain client, to look at localstripe's records directly."""
    return stripe.StripeClient(
        "sk_test_swapflow", base_addresses={"api": localstripe_url}, http_client=stripe.HTTPXClient()
    )


def charge_request(amount: int = 900, payer: str = CARD) -> ChargeRequest:
    return ChargeRequest(
        key=f"swap:{uuid.uuid4().hex}:charge",
        amount_minor=amount,
        currency="EUR",
        rider_id="rider-sh-0001",
        payer=payer,
    )


async def captured(provider: StripeProvider, amount: int = 900) -> ProviderPayment:
    request = charge_request(amount)
    await provider.charge(request)
    return await provider.capture(request.key)


async def intents_with(client: stripe.StripeClient, key: str) -> int:
    page = await client.v1.payment_intents.list_async(params={"limit": 100})
    return len([intent async for intent in page.auto_paging_iter() if intent.metadata.to_dict().get(KEY) == key])


async def refunds_with(client: stripe.StripeClient, key: str) -> int:
    page = await client.v1.refunds.list_async(params={"limit": 100})
    return len([refund async for refund in page.auto_paging_iter() if refund.metadata.to_dict().get(KEY) == key])


# ---- payments ----


def test_provider_implements_the_payment_provider_interface(provider: StripeProvider) -> None:
    assert isinstance(provider, PaymentProvider)
    assert provider.method is PaymentMethod.STRIPE


async def test_charge_authorizes_without_capturing(provider: StripeProvider) -> None:
    request = charge_request()
    payment = await provider.charge(request)
    assert (payment.status, payment.amount_minor, payment.currency) == (PaymentStatus.AUTHORIZED, 900, "EUR")
    assert payment.payment_id.startswith("pi_")
    assert await provider.find_payment(request.key) == payment


async def test_capture_takes_the_authorized_amount_once(provider: StripeProvider) -> None:
    request = charge_request()
    await provider.charge(request)
    payment = await provider.capture(request.key)
    assert (payment.status, payment.amount_minor) == (PaymentStatus.CAPTURED, 900)
    assert await provider.capture(request.key) == payment


async def test_close_cancels_the_authorization(provider: StripeProvider) -> None:
    request = charge_request()
    await provider.charge(request)
    assert (await provider.close(request.key)).status is PaymentStatus.CLOSED
    with pytest.raises(ProviderDeclined):
        await provider.capture(request.key)


async def test_same_key_twice_charges_once(provider: StripeProvider, localstripe: stripe.StripeClient) -> None:
    request = charge_request()
    first, again = await provider.charge(request), await provider.charge(request)
    assert first.payment_id == again.payment_id
    assert await intents_with(localstripe, request.key) == 1


async def test_declined_card_is_declined_also_on_retry(
    provider: StripeProvider, localstripe: stripe.StripeClient
) -> None:
    request = charge_request(payer=DECLINED_CARD)
    with pytest.raises(ProviderDeclined, match="declined"):
        await provider.charge(request)
    with pytest.raises(ProviderDeclined):
        await provider.charge(request)
    assert await intents_with(localstripe, request.key) <= 1


async def test_unknown_payment_and_refund_are_not_found(provider: StripeProvider) -> None:
    assert await provider.find_payment(f"swap:{uuid.uuid4().hex}:charge") is None
    assert await provider.find_refund(refund_key(uuid.uuid4().hex)) is None


async def test_unreachable_stripe_is_unavailable(stripe_settings: Settings) -> None:
    provider = StripeProvider(stripe_settings.updated(stripe={"api_base": f"http://127.0.0.1:{free_port()}"}))
    with pytest.raises(ProviderUnavailable):
        await provider.charge(charge_request())


async def test_lost_answer_after_the_authorization_then_the_retry_charges_once(
    stripe_settings: Settings, localstripe_url: str, localstripe: stripe.StripeClient
) -> None:
    proxy = LaggingProxy(int(localstripe_url.rsplit(":", 1)[1]))
    provider = StripeProvider(stripe_settings.updated(stripe={"api_base": await proxy.start(), "timeout_s": 1.0}))
    request = charge_request()
    try:
        proxy.lag_next("POST /v1/payment_intents ", 2.0)
        with pytest.raises(ProviderTimeout):
            await provider.charge(request)
        assert await intents_with(localstripe, request.key) == 1  # localstripe authorized it all the same
        payment = await provider.charge(request)
    finally:
        await proxy.stop()
    assert payment.status is PaymentStatus.AUTHORIZED
    assert await intents_with(localstripe, request.key) == 1


# ---- refunds ----


async def test_partial_then_full_refund_of_the_rest(provider: StripeProvider) -> None:
    payment = await captured(provider)
    part = await provider.refund(
        RefundRequest(key=refund_key(uuid.uuid4().hex), payment=payment, amount_minor=300, reason="partial")
    )
    assert (part.status, part.amount_minor, part.payment_id) == (RefundStatus.SUCCEEDED, 300, payment.payment_id)
    after = await provider.find_payment(payment.key)
    assert after is not None and after.refunded_minor == 300
    rest = await provider.refund(
        RefundRequest(key=refund_key(uuid.uuid4().hex), payment=after, amount_minor=600, reason="the rest")
    )
    assert rest.amount_minor == 600
    assert (await provider.find_payment(payment.key)).refunded_minor == 900  # type: ignore[union-attr]
    assert await provider.find_refund(rest.key) == rest


async def test_refund_beyond_the_capture_is_refused_by_our_guard(
    provider: StripeProvider, localstripe: stripe.StripeClient
) -> None:
    payment = await captured(provider)
    await provider.refund(
        RefundRequest(key=refund_key(uuid.uuid4().hex), payment=payment, amount_minor=500, reason="first")
    )
    too_much = RefundRequest(key=refund_key(uuid.uuid4().hex), payment=payment, amount_minor=500, reason="again")
    with pytest.raises(RefundExceedsCapture):
        await provider.refund(too_much)  # localstripe itself would have refunded it
    assert await refunds_with(localstripe, too_much.key) == 0


async def test_refund_of_an_uncaptured_authorization_is_refused(provider: StripeProvider) -> None:
    request = charge_request()
    payment = await provider.charge(request)
    with pytest.raises(RefundExceedsCapture):
        await provider.refund(
            RefundRequest(key=refund_key(uuid.uuid4().hex), payment=payment, amount_minor=100, reason="nothing taken")
        )


async def test_same_refund_key_twice_refunds_once(provider: StripeProvider, localstripe: stripe.StripeClient) -> None:
    payment = await captured(provider)
    request = RefundRequest(key=refund_key(uuid.uuid4().hex), payment=payment, amount_minor=400, reason="failed swap")
    first, again = await provider.refund(request), await provider.refund(request)
    assert first.refund_id == again.refund_id
    assert await refunds_with(localstripe, request.key) == 1


# ---- statement ----


async def test_statement_lists_the_days_charges_and_refunds_under_our_keys(provider: StripeProvider) -> None:
    payment = await captured(provider, amount=1234)
    refund = await provider.refund(
        RefundRequest(key=refund_key(uuid.uuid4().hex), payment=payment, amount_minor=234, reason="partial")
    )
    lines = await provider.statement(datetime.now(UTC).date())
    mine = [(line.kind, line.amount_minor) for line in lines if line.key in (payment.key, refund.key)]
    assert sorted(mine) == [("charge", 1234), ("refund", -234)]


# ---- webhooks ----


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


async def intent_object(client: stripe.StripeClient, payment: ProviderPayment) -> dict:
    return (await client.v1.payment_intents.retrieve_async(payment.payment_id)).to_dict()


async def test_signed_webhook_is_accepted_and_recorded_once(
    stripe_settings: Settings,
    provider: StripeProvider,
    localstripe: stripe.StripeClient,
    db: Database,
    temporal_env: WorkflowEnvironment,
) -> None:
    payment = await captured(provider)
    headers, body = stripe_webhook("payment_intent.succeeded", await intent_object(localstripe, payment))
    async with api_client(stripe_settings, temporal_env.client) as (api, _):
        first = await api.post(WEBHOOK, content=body, headers=headers)
        again = await api.post(WEBHOOK, content=body, headers=headers)
    assert (first.status_code, again.status_code) == (200, 200)
    async with db.sessions() as session:
        rows = (await session.scalars(select(PaymentNotification))).all()
    assert [(row.provider, row.key, row.status) for row in rows] == [("stripe", payment.key, "captured")]


async def test_webhook_with_a_wrong_signature_is_rejected(
    stripe_settings: Settings,
    provider: StripeProvider,
    localstripe: stripe.StripeClient,
    db: Database,
    temporal_env: WorkflowEnvironment,
) -> None:
    payment = await captured(provider)
    headers, body = stripe_webhook(
        "payment_intent.succeeded", await intent_object(localstripe, payment), secret="whsec_someone_else"
    )
    async with api_client(stripe_settings, temporal_env.client) as (api, _):
        response = await api.post(WEBHOOK, content=body, headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert await notifications(db) == 0


async def test_stale_webhook_is_rejected(
    stripe_settings: Settings,
    provider: StripeProvider,
    localstripe: stripe.StripeClient,
    db: Database,
    temporal_env: WorkflowEnvironment,
) -> None:
    payment = await captured(provider)
    for skew in (-600, 600):  # replayed from the past, or stamped in the future
        headers, body = stripe_webhook(
            "payment_intent.succeeded", await intent_object(localstripe, payment), timestamp=int(time.time()) + skew
        )
        async with api_client(stripe_settings, temporal_env.client) as (api, _):
            response = await api.post(WEBHOOK, content=body, headers=headers)
        assert response.status_code == 400
        assert "stale" in response.json()["detail"]
    assert await notifications(db) == 0


def event_with(obj: object) -> dict[str, object]:
    return {
        "id": "evt_shape",
        "object": "event",
        "type": "refund.updated",
        "created": int(time.time()),
        "data": {"object": obj},
    }


@pytest.mark.parametrize(
    "content",
    [
        [event_with({"id": "re_1"})],
        "evt_shape",
        event_with("re_1"),
        event_with({"id": "re_1", "metadata": [KEY, "refund:x"]}),
    ],
    ids=["body-array", "body-string", "object-string", "metadata-list"],
)
async def test_signed_webhook_of_an_unexpected_shape_is_a_400_problem_recorded_once(
    settings: Settings, db: Database, temporal_env: WorkflowEnvironment, content: object
) -> None:
    configured = settings.updated(stripe=stripe_settings_values("http://127.0.0.1:9"))  # never called
    headers, body = signed_stripe_body(content)
    async with api_client(configured, temporal_env.client) as (api, _):
        first = await api.post(WEBHOOK, content=body, headers=headers)
        again = await api.post(WEBHOOK, content=body, headers=headers)
    assert (first.status_code, again.status_code) == (400, 400)
    assert first.headers["content-type"] == "application/problem+json"
    assert first.json()["title"] == "Malformed notification"
    async with db.sessions() as session:
        rows = (await session.scalars(select(PaymentNotification))).all()
    assert [(row.provider, row.key, row.status) for row in rows] == [("stripe", None, "malformed")]
    assert rows[0].payload == {"error": first.json()["detail"], "content": content}


async def test_refund_webhook_signals_the_refund_workflow(
    stripe_settings: Settings,
    provider: StripeProvider,
    localstripe: stripe.StripeClient,
    db: Database,
    recorder: WorkflowEnvironment,
    settings: Settings,
) -> None:
    payment = await captured(provider)
    refund_id = uuid.uuid4().hex
    refund = await provider.refund(
        RefundRequest(key=refund_key(refund_id), payment=payment, amount_minor=900, reason="failed swap")
    )
    workflow_id = refund_workflow_id(refund_id)
    await recorder.client.start_workflow(
        RefundNotificationRecorder.run, id=workflow_id, task_queue=settings.temporal.task_queue
    )
    refund_object = (await localstripe.v1.refunds.retrieve_async(refund.refund_id)).to_dict()
    headers, body = stripe_webhook("refund.updated", refund_object)
    async with api_client(stripe_settings, recorder.client) as (api, _):
        assert (await api.post(WEBHOOK, content=body, headers=headers)).status_code == 200
    received = await wait_for_received(recorder.client, workflow_id, 1)
    assert [(r.key, r.status, r.amount_minor) for r in received] == [(refund.key, RefundStatus.SUCCEEDED, 900)]
    await recorder.client.get_workflow_handle(workflow_id).terminate()
