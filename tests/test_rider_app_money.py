"""The phone page's money, against the real database, the WeChat Pay v3 fake's settings and localstripe: the
rider's payment methods (the default, WeChat Pay bound to the openid they signed in with, removing one), a
card saved through a SetupIntent confirmed as Stripe.js confirms it and recorded once Stripe says it
succeeded, and a plan bought (pending until the provider confirms)."""

from __future__ import annotations

import re

import httpx
import pytest
from sqlalchemy import select, update
from temporalio.testing import WorkflowEnvironment

from swapflow.db.engine import Database
from swapflow.db.money import PlanPurchase, RiderPaymentMethod
from swapflow.db.network import Rider
from swapflow.services import payment_methods
from swapflow.settings import Settings
from swapflow.workflows.plan_purchase_contract import plan_purchase_workflow_id
from tests.console_harness import csrf_of
from tests.payment_fakes import localstripe_url, stripe_settings_values, wechat_fake  # noqa: F401  (fixtures)
from tests.test_rider_app import RIDER, app_client, rider  # noqa: F401  (fixtures)
from tests.test_rider_payment_methods import VISA, confirm_as_stripe_js
from tests.wechat_fake import WeChatPayFake


@pytest.fixture
def settings(settings: Settings, wechat_fake: WeChatPayFake, localstripe_url: str) -> Settings:
    return settings.updated(wechat=wechat_fake.settings_values(), stripe=stripe_settings_values(localstripe_url))


async def methods_of(db: Database) -> list[RiderPaymentMethod]:
    async with db.sessions() as session:
        return await payment_methods.list_methods(session, RIDER)


async def test_the_wallet_lists_how_the_rider_pays_with_the_default_marked(
    rider: httpx.AsyncClient, db: Database
) -> None:
    await payment_methods.use_wallet(db, RIDER)
    page = await rider.get("/app/wallet")
    assert page.status_code == 200
    assert re.search(r'data-method="wallet">Wallet <strong>\(default\)</strong>', page.text)


async def test_a_rider_who_signed_in_with_wechat_binds_wechat_pay(rider: httpx.AsyncClient, db: Database) -> None:
    async with db.transaction() as session:
        await session.execute(update(Rider).where(Rider.id == RIDER).values(wechat_openid="o-rider-sh-0001"))
    page = await rider.get("/app/wallet")
    answer = await rider.post("/app/wallet/methods/wechat", data={"csrf_token": csrf_of(page.text)})
    assert answer.status_code == 303
    assert [(m.method, m.is_default) for m in await methods_of(db)] == [("wechat", True)]


async def test_another_method_is_made_the_default_and_a_method_removed(
    rider: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    await payment_methods.use_wallet(db, RIDER)
    async with db.transaction() as session:
        await session.execute(update(Rider).where(Rider.id == RIDER).values(wechat_openid="o-rider-sh-0001"))
    wechat, _ = await payment_methods.bind_wechat(db, settings, RIDER)
    csrf = csrf_of((await rider.get("/app/wallet")).text)
    assert (await rider.post(f"/app/wallet/methods/{wechat.id}/default", data={"csrf_token": csrf})).status_code == 303
    assert {m.method: m.is_default for m in await methods_of(db)} == {"wechat": True, "wallet": False}
    assert (await rider.post(f"/app/wallet/methods/{wechat.id}/remove", data={"csrf_token": csrf})).status_code == 303
    assert [(m.method, m.is_default) for m in await methods_of(db)] == [("wallet", True)]


async def test_a_card_confirmed_with_stripe_is_saved_from_the_card_page(
    rider: httpx.AsyncClient, db: Database, localstripe_url: str
) -> None:
    page = await rider.get("/app/wallet/cards/new")
    assert page.status_code == 200
    assert f'src="{localstripe_url}/js.stripe.com/v3/"' in page.text
    setup = {
        "setup_intent_id": re.search(r'name="setup_intent_id" value="([^"]+)"', page.text).group(1),  # type: ignore[union-attr]
        "client_secret": re.search(r'data-client-secret="([^"]+)"', page.text).group(1),  # type: ignore[union-attr]
        "publishable_key": re.search(r'data-publishable-key="([^"]+)"', page.text).group(1),  # type: ignore[union-attr]
    }
    await confirm_as_stripe_js(localstripe_url, setup, payment_method=VISA)
    saved = await rider.post(
        "/app/wallet/cards", data={"setup_intent_id": setup["setup_intent_id"], "csrf_token": csrf_of(page.text)}
    )
    assert saved.status_code == 303
    assert [(m.method, m.label) for m in await methods_of(db)] == [("stripe", "Visa ·· 4242")]


async def test_a_card_not_confirmed_is_not_saved(rider: httpx.AsyncClient, db: Database) -> None:
    page = await rider.get("/app/wallet/cards/new")
    setup_intent_id = re.search(r'name="setup_intent_id" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    refused = await rider.post(
        "/app/wallet/cards", data={"setup_intent_id": setup_intent_id, "csrf_token": csrf_of(page.text)}
    )
    assert refused.status_code == 409 and "a card is saved once it has succeeded" in refused.text
    assert await methods_of(db) == []


async def test_buying_a_plan_opens_a_purchase_that_waits_for_the_payment(
    rider: httpx.AsyncClient, db: Database, temporal_env: WorkflowEnvironment
) -> None:
    page = await rider.get("/app/wallet")
    plan_id = re.search(r'name="plan_id" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    token = re.search(r'name="plan_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    data = {"plan_id": plan_id, "plan_token": token, "csrf_token": csrf_of(page.text)}
    assert (await rider.post("/app/wallet/plans", data=data)).status_code == 303
    assert (await rider.post("/app/wallet/plans", data=data)).status_code == 303  # a double tap buys once
    async with db.sessions() as session:
        purchases = list(await session.scalars(select(PlanPurchase).where(PlanPurchase.rider_id == RIDER)))
    assert [(p.plan_id, p.status) for p in purchases] == [(plan_id, "pending")]
    # No worker collects it here: its workflow must not keep the shared test server from skipping time.
    await temporal_env.client.get_workflow_handle(plan_purchase_workflow_id(purchases[0].id)).terminate()
