"""Plans from the rider's side, over HTTP, against the real database, worker and time-skipping server:
the plans on sale in the rider's city; buying a period of one, collected through the rider's provider by
workflow `plan_purchase/<id>`, the plan running only once the provider confirms the payment (a WeChat Pay
purchase waits for the rider, showing the pay sheet's parameters); the plan's period and swaps; and the
rider's wallet movements and refunds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select, update
from temporalio.testing import WorkflowEnvironment

from swapflow.activities.reconciliation import ReconciliationActivities
from swapflow.db.engine import Database
from swapflow.db.money import LedgerPosting, LedgerTransaction, Payment, Subscription, SubscriptionPlan
from swapflow.domain.clock import as_utc, utcnow
from swapflow.domain.ops import OperatorRole
from swapflow.ops.invariants import check_invariants
from swapflow.payments.ledger import provider_clearing
from swapflow.payments.plans import plan_purchase_payment_key
from swapflow.payments.provider import PaymentMethod
from swapflow.payments.refunds import RefundOrigin, charge_key, swap_refund_id
from swapflow.payments.wechat import out_trade_no
from swapflow.settings import Settings
from swapflow.workflows.plan_purchase_contract import PlanPurchaseOutcome
from swapflow.workflows.reconciliation_contract import ReconcileProvider
from swapflow.workflows.refund_contract import RefundStart
from swapflow.workflows.swap_contract import PaymentDeclinedError
from tests.api_harness import app_sharing
from tests.history_recording import RecordHistory
from tests.money_harness import OTHER_RIDER, RIDER, Money
from tests.ops_harness import bearer, operator_token, rider_token
from tests.payment_fakes import localstripe_url, stripe_settings_values, wechat_fake  # noqa: F401  (fixtures)
from tests.swap_harness import running_worker
from tests.wechat_fake import WeChatPayFake

PLAN = "plan-sh-60"  # the demo seed's Shanghai plan: 60 swaps a month for 30000 (CNY minor units)
PRICE = 30_000
BUY = f"/v1/riders/{RIDER}/subscriptions"
OPENID = "o-rider-sh-0001"
DECLINED_CARD = "pm_card_chargeCustomerFail"  # localstripe: declined when charged


@pytest.fixture
def settings(settings: Settings, wechat_fake: WeChatPayFake, localstripe_url: str) -> Settings:
    """WeChat Pay (its fake) and Stripe (localstripe) configured; a pending payment asked about often and
    abandoned after 3 s."""
    return settings.updated(
        wechat=wechat_fake.settings_values(),
        stripe=stripe_settings_values(localstripe_url),
        payments={"payment_poll_interval_s": 0.1, "payment_pending_timeout_s": 3.0},
    )


@pytest.fixture
async def money(db: Database, settings: Settings) -> Money:
    return Money(db, settings)


@pytest.fixture
async def api(temporal_env: WorkflowEnvironment, settings: Settings, db: Database) -> AsyncIterator[httpx.AsyncClient]:
    """The API in this test's event loop, with a worker, called with the rider's own token."""
    app = app_sharing(settings, db, temporal_env.client)
    async with (
        running_worker(temporal_env.client, settings, db),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://api",
            headers=bearer(await rider_token(db, RIDER)),
        ) as client,
    ):
        yield client


async def bought(api: httpx.AsyncClient, key: str = "plan-1", plan_id: str = PLAN) -> dict[str, str]:
    opened = await api.post(BUY, json={"plan_id": plan_id}, headers={"Idempotency-Key": key})
    assert opened.status_code == 202, opened.json()
    return dict(opened.json())


async def purchase_done(env: WorkflowEnvironment, workflow_id: str) -> PlanPurchaseOutcome:
    return await env.client.get_workflow_handle(workflow_id, result_type=PlanPurchaseOutcome).result()


async def subscription(db: Database) -> Subscription | None:
    async with db.sessions() as session:
        return await session.get(Subscription, RIDER)


async def sale_postings(db: Database, key: str) -> dict[str, int]:
    async with db.sessions() as session:
        rows = await session.execute(
            select(LedgerPosting.account, LedgerPosting.amount_minor)
            .join(LedgerTransaction)
            .where(LedgerTransaction.key == key)
        )
        return dict(rows.tuples().all())


async def add_plan(db: Database, plan_id: str, city_code: str | None, currency: str, *, for_sale: bool = True) -> None:
    async with db.transaction() as session:
        session.add(
            SubscriptionPlan(
                id=plan_id,
                name=plan_id,
                swaps_per_period=10,
                period_days=7,
                price_minor=5_000,
                currency=currency,
                city_code=city_code,
                for_sale=for_sale,
            )
        )


# ------------------------------------------------------------------------------------------ plans on sale


async def test_a_rider_sees_the_plans_on_sale_in_their_city(api: httpx.AsyncClient, db: Database) -> None:
    await add_plan(db, "plan-cny-anywhere", None, "CNY")
    await add_plan(db, "plan-eur-anywhere", None, "EUR")
    await add_plan(db, "plan-sh-retired", "SH", "CNY", for_sale=False)
    listed = await api.get("/v1/plans")
    assert listed.status_code == 200
    assert [plan["id"] for plan in listed.json()] == ["plan-cny-anywhere", PLAN]


async def test_a_rider_may_not_list_another_citys_plans(api: httpx.AsyncClient) -> None:
    assert (await api.get("/v1/plans", params={"city": "SZ"})).status_code == 403


async def test_a_plan_of_another_city_does_not_exist_for_the_rider(api: httpx.AsyncClient) -> None:
    refused = await api.post(BUY, json={"plan_id": "plan-sz-60"}, headers={"Idempotency-Key": "sz"})
    assert (refused.status_code, refused.json()["title"]) == (404, "Unknown plan")


# ------------------------------------------------------------------------------------------ buying


@pytest.mark.records_history
async def test_a_plan_runs_only_once_the_sandbox_captures_its_price(
    temporal_env: WorkflowEnvironment, api: httpx.AsyncClient, db: Database, record_history: RecordHistory
) -> None:
    opened = await bought(api)
    assert (opened["status"], opened["method"], opened["amount_minor"]) == ("pending", "sandbox", PRICE)
    outcome = await purchase_done(temporal_env, opened["workflow_id"])
    await record_history(opened["workflow_id"], "plan_purchase_succeeded")
    assert (outcome.status, outcome.plan_id) == ("succeeded", PLAN)
    plan = (await api.get(f"/v1/riders/{RIDER}/subscription")).json()
    assert (plan["plan"]["id"], plan["status"], plan["swaps_used"], plan["swaps_left"]) == (PLAN, "active", 0, 60)
    key = plan_purchase_payment_key(opened["id"])
    assert await sale_postings(db, key) == {provider_clearing("sandbox"): PRICE, f"subscription:{RIDER}": -PRICE}
    assert (await check_invariants(db)).violations == []


async def test_a_bought_plan_becomes_the_riders_way_of_paying_swaps(
    temporal_env: WorkflowEnvironment, api: httpx.AsyncClient, money: Money
) -> None:
    await purchase_done(temporal_env, (await bought(api))["workflow_id"])
    await money.ready()
    order_id = await money.charged()
    async with money.db.sessions() as session:
        charge = await session.scalar(select(Payment).where(Payment.key == charge_key(order_id)))
    assert charge is not None and charge.method == PaymentMethod.SUBSCRIPTION
    plan = (await api.get(f"/v1/riders/{RIDER}/subscription")).json()
    assert (plan["swaps_used"], plan["swaps_left"]) == (1, 59)


async def test_a_captured_plan_purchase_reconciles_with_the_ledger_and_the_provider(
    temporal_env: WorkflowEnvironment, api: httpx.AsyncClient, money: Money
) -> None:
    await purchase_done(temporal_env, (await bought(api))["workflow_id"])
    report = await ReconciliationActivities(money.db, money.providers).reconcile(
        ReconcileProvider(day=utcnow().date(), provider="sandbox")
    )
    assert [(p.provider, p.exceptions) for p in report.providers] == [("sandbox", 0)]


async def test_a_wechat_plan_purchase_shows_the_pay_sheets_parameters_and_waits_for_the_rider(
    temporal_env: WorkflowEnvironment, api: httpx.AsyncClient, money: Money, wechat_fake: WeChatPayFake
) -> None:
    await money.pays_by(RIDER, PaymentMethod.WECHAT, OPENID)
    with temporal_env.auto_time_skipping_disabled():
        opened = await bought(api, "wx")
        assert opened["method"] == "wechat"
        seen = (await api.get(f"{BUY}/{opened['id']}")).json()
        while seen["client_params"] is None:  # the order is made at WeChat: the app may open the pay sheet
            await asyncio.sleep(0.05)
            seen = (await api.get(f"{BUY}/{opened['id']}")).json()
        order = wechat_fake.orders[out_trade_no(plan_purchase_payment_key(opened["id"]))]
        assert seen["status"] == "pending" and seen["client_params"]["package"] == f"prepay_id={order.prepay_id}"
        assert await subscription(money.db) is None
        wechat_fake.pay(out_trade_no(plan_purchase_payment_key(opened["id"])))
        outcome = await purchase_done(temporal_env, opened["workflow_id"])
    assert outcome.status == "succeeded"
    assert (await api.get(f"{BUY}/{opened['id']}")).json()["client_params"] is None
    assert (await api.get(f"/v1/riders/{RIDER}/subscription")).json()["status"] == "active"


async def test_a_wechat_plan_purchase_never_paid_leaves_no_plan(
    temporal_env: WorkflowEnvironment, api: httpx.AsyncClient, money: Money, wechat_fake: WeChatPayFake
) -> None:
    await money.pays_by(RIDER, PaymentMethod.WECHAT, OPENID)
    with temporal_env.auto_time_skipping_disabled():
        opened = await bought(api, "wx")
        outcome = await purchase_done(temporal_env, opened["workflow_id"])
    assert (outcome.status, outcome.reason) == ("failed", "payment closed")
    assert wechat_fake.orders[out_trade_no(plan_purchase_payment_key(opened["id"]))].state == "CLOSED"
    assert (await api.get(f"/v1/riders/{RIDER}/subscription")).status_code == 404
    assert await sale_postings(money.db, plan_purchase_payment_key(opened["id"])) == {}


async def test_a_plan_paid_by_a_declined_card_leaves_no_plan(
    temporal_env: WorkflowEnvironment, api: httpx.AsyncClient, money: Money
) -> None:
    await money.pays_by(RIDER, PaymentMethod.STRIPE, DECLINED_CARD)
    opened = await bought(api, "card")
    outcome = await purchase_done(temporal_env, opened["workflow_id"])
    assert (opened["method"], outcome.status) == ("stripe", "failed")
    assert await subscription(money.db) is None


async def test_the_same_idempotency_key_opens_one_purchase(
    temporal_env: WorkflowEnvironment, api: httpx.AsyncClient
) -> None:
    opened = await bought(api)
    await purchase_done(temporal_env, opened["workflow_id"])
    again = await api.post(BUY, json={"plan_id": PLAN}, headers={"Idempotency-Key": "plan-1"})
    assert (again.status_code, again.json()["id"], again.json()["status"]) == (200, opened["id"], "succeeded")
    other = await api.post(BUY, json={"plan_id": "plan-other"}, headers={"Idempotency-Key": "plan-1"})
    assert (other.status_code, other.json()["title"]) == (409, "Plan purchase refused")


async def test_buying_the_running_plan_again_adds_a_period(
    temporal_env: WorkflowEnvironment, api: httpx.AsyncClient, db: Database
) -> None:
    await purchase_done(temporal_env, (await bought(api, "first"))["workflow_id"])
    first = await subscription(db)
    assert first is not None and first.paid_until is not None
    await purchase_done(temporal_env, (await bought(api, "second"))["workflow_id"])
    second = await subscription(db)
    assert second is not None and second.paid_until is not None
    assert as_utc(second.paid_until) - as_utc(first.paid_until) == timedelta(days=30)
    assert second.started_at == first.started_at


async def test_another_plan_cannot_be_bought_while_a_paid_period_runs(
    temporal_env: WorkflowEnvironment, api: httpx.AsyncClient, db: Database
) -> None:
    await add_plan(db, "plan-sh-weekly", "SH", "CNY")
    await purchase_done(temporal_env, (await bought(api, "first"))["workflow_id"])
    refused = await api.post(BUY, json={"plan_id": "plan-sh-weekly"}, headers={"Idempotency-Key": "second"})
    assert (refused.status_code, refused.json()["title"]) == (409, "Plan purchase refused")


async def test_a_rider_buys_one_plan_at_a_time(
    temporal_env: WorkflowEnvironment, api: httpx.AsyncClient, money: Money
) -> None:
    await money.pays_by(RIDER, PaymentMethod.WECHAT, OPENID)
    with temporal_env.auto_time_skipping_disabled():
        first = await bought(api, "first")
        refused = await api.post(BUY, json={"plan_id": PLAN}, headers={"Idempotency-Key": "second"})
        await purchase_done(temporal_env, first["workflow_id"])
    assert (refused.status_code, refused.json()["title"]) == (409, "Plan purchase refused")


async def test_a_plan_whose_paid_periods_are_over_takes_no_more_swaps(
    temporal_env: WorkflowEnvironment, api: httpx.AsyncClient, money: Money
) -> None:
    await purchase_done(temporal_env, (await bought(api))["workflow_id"])
    async with money.db.transaction() as session:
        await session.execute(
            update(Subscription).where(Subscription.rider_id == RIDER).values(paid_until=utcnow() - timedelta(hours=1))
        )
    await money.ready()
    with pytest.raises(PaymentDeclinedError) as refusal:
        await money.charged()
    assert "subscription_expired" in str(refusal.value.details)
    plan = (await api.get(f"/v1/riders/{RIDER}/subscription")).json()
    assert (plan["status"], plan["swaps_left"]) == ("expired", 0)


async def test_only_the_rider_buys_their_plan(api: httpx.AsyncClient, db: Database) -> None:
    token = await operator_token(db, "finance-sh", OperatorRole.FINANCE, ["SH"])
    refused = await api.post(BUY, json={"plan_id": PLAN}, headers={"Idempotency-Key": "staff", **bearer(token)})
    assert refused.status_code == 403
    other = await api.post(
        f"/v1/riders/{OTHER_RIDER}/subscriptions", json={"plan_id": PLAN}, headers={"Idempotency-Key": "x"}
    )
    assert other.status_code == 404


async def test_a_rider_without_a_plan_has_no_subscription(api: httpx.AsyncClient) -> None:
    missing = await api.get(f"/v1/riders/{RIDER}/subscription")
    assert (missing.status_code, missing.json()["title"]) == (404, "Unknown subscription")


# ------------------------------------------------------------------------------------------ the rider's money


async def test_a_rider_pages_through_their_wallet_movements_newest_first(api: httpx.AsyncClient, money: Money) -> None:
    for n, amount in enumerate((100, 200, 300)):
        await money.wallet_rider(amount, key=f"gift-{n}")
    first = (await api.get(f"/v1/riders/{RIDER}/wallet/entries", params={"limit": 2})).json()
    assert [entry["amount_minor"] for entry in first["items"]] == [300, 200]
    rest = await api.get(f"/v1/riders/{RIDER}/wallet/entries", params={"limit": 2, "cursor": first["next_cursor"]})
    assert ([entry["amount_minor"] for entry in rest.json()["items"]], rest.json()["next_cursor"]) == ([100], None)


async def test_a_rider_lists_their_refunds_and_where_each_stands(api: httpx.AsyncClient, money: Money) -> None:
    await money.ready()
    order_id = await money.failed_after_charge()
    await money.refunds.prepare(
        RefundStart(
            refund_id=swap_refund_id(order_id), order_id=order_id, reason="test", origin=RefundOrigin.SWAP_COMPENSATION
        )
    )
    listed = await api.get(f"/v1/riders/{RIDER}/refunds")
    assert [(r["id"], r["status"], r["amount_minor"]) for r in listed.json()["items"]] == [
        (swap_refund_id(order_id), "requested", 600)
    ]


async def test_another_riders_wallet_movements_and_refunds_do_not_exist_for_a_rider(api: httpx.AsyncClient) -> None:
    assert (await api.get(f"/v1/riders/{OTHER_RIDER}/wallet/entries")).status_code == 404
    assert (await api.get(f"/v1/riders/{OTHER_RIDER}/refunds")).status_code == 404
