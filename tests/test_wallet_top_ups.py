"""Money into a wallet over HTTP, against the real database, worker and time-skipping server: a top-up
is a payment through the rider's provider, pending until the provider confirms it and credited only
then; crediting without a payment is finance's goodwill credit, with its reason and approver; and the
invariant checker finds any wallet credit nothing pays for."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import select, update
from temporalio.testing import WorkflowEnvironment

from swapflow.activities.reconciliation import ReconciliationActivities
from swapflow.activities.topup import TopUpOutcome
from swapflow.db.engine import Database, create_sync_engine
from swapflow.db.migrate import upgrade
from swapflow.db.money import LedgerPosting, LedgerTransaction, Wallet
from swapflow.demo.network import seed_demo_network
from swapflow.domain.clock import utcnow
from swapflow.domain.ops import OperatorRole
from swapflow.ops.invariants import Rule, check_invariants
from swapflow.payments.ledger import provider_clearing
from swapflow.payments.provider import PaymentMethod
from swapflow.payments.topups import top_up_payment_key
from swapflow.payments.wallet import credit_wallet
from swapflow.payments.wechat import out_trade_no
from swapflow.settings import Settings
from swapflow.workflows.reconciliation_contract import ReconcileProvider
from tests.api_harness import app_sharing
from tests.history_recording import RecordHistory
from tests.money_harness import OTHER_RIDER, RIDER, Money
from tests.ops_harness import bearer, operator_token, rider_token
from tests.payment_fakes import localstripe_url, stripe_settings_values, wechat_fake  # noqa: F401  (fixtures)
from tests.swap_harness import running_worker
from tests.wechat_fake import WeChatPayFake

TOP_UPS = f"/v1/riders/{RIDER}/wallet/top-ups"
GOODWILL = f"/v1/riders/{RIDER}/wallet/goodwill-credits"
OPENID = "o-rider-sh-0001"
CARD, DECLINED_CARD = "pm_card_visa", "pm_card_chargeCustomerFail"  # localstripe: declined on charge


@pytest.fixture
def settings(settings: Settings, wechat_fake: WeChatPayFake, localstripe_url: str) -> Settings:
    """WeChat Pay (its fake) and Stripe (localstripe) configured, a pending payment asked about often and
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


async def top_up_done(env: WorkflowEnvironment, workflow_id: str) -> TopUpOutcome:
    return await env.client.get_workflow_handle(workflow_id, result_type=TopUpOutcome).result()


async def balance(db: Database, rider_id: str = RIDER) -> int | None:
    async with db.sessions() as session:
        wallet = await session.get(Wallet, rider_id)
    return None if wallet is None else wallet.balance_minor


async def postings(db: Database, kind: str) -> dict[str, int]:
    async with db.sessions() as session:
        rows = await session.execute(
            select(LedgerPosting.account, LedgerPosting.amount_minor)
            .join(LedgerTransaction)
            .where(LedgerTransaction.kind == kind)
        )
        return dict(rows.tuples().all())


async def wallet_violations(db: Database) -> list[str]:
    report = await check_invariants(db)
    return [v.subject for v in report.violations if v.rule.startswith("wallet.")]


# ------------------------------------------------------------------------------------------ top-ups


@pytest.mark.records_history
async def test_a_top_up_is_pending_until_the_sandbox_captures_it_then_credited_once(
    temporal_env: WorkflowEnvironment, api: httpx.AsyncClient, db: Database, record_history: RecordHistory
) -> None:
    opened = await api.post(TOP_UPS, json={"amount_minor": 5000}, headers={"Idempotency-Key": "t1"})
    assert opened.status_code == 202, opened.json()
    assert (opened.json()["status"], opened.json()["method"]) == ("pending", "sandbox")
    outcome = await top_up_done(temporal_env, opened.json()["workflow_id"])
    await record_history(opened.json()["workflow_id"], "topup_succeeded")
    assert (outcome.status, outcome.amount_minor) == ("succeeded", 5000)

    again = await api.post(TOP_UPS, json={"amount_minor": 5000}, headers={"Idempotency-Key": "t1"})
    assert (again.status_code, again.json()["id"], again.json()["status"]) == (200, opened.json()["id"], "succeeded")
    assert await balance(db) == 5000
    assert await postings(db, "wallet_topup") == {provider_clearing("sandbox"): 5000, f"wallet:{RIDER}": -5000}
    assert await wallet_violations(db) == []


async def test_a_captured_top_up_reconciles_with_the_ledger_and_the_provider(
    temporal_env: WorkflowEnvironment, api: httpx.AsyncClient, money: Money
) -> None:
    opened = await api.post(TOP_UPS, json={"amount_minor": 3000}, headers={"Idempotency-Key": "t-rec"})
    await top_up_done(temporal_env, opened.json()["workflow_id"])
    report = await ReconciliationActivities(money.db, money.providers).reconcile(
        ReconcileProvider(day=utcnow().date(), provider="sandbox")
    )
    assert [(p.provider, p.exceptions) for p in report.providers] == [("sandbox", 0)]


async def test_a_reused_idempotency_key_with_another_amount_is_a_409(api: httpx.AsyncClient) -> None:
    await api.post(TOP_UPS, json={"amount_minor": 5000}, headers={"Idempotency-Key": "t1"})
    other = await api.post(TOP_UPS, json={"amount_minor": 100000}, headers={"Idempotency-Key": "t1"})
    assert (other.status_code, other.json()["title"]) == (409, "Top-up refused")


async def test_a_wechat_top_up_stays_pending_and_uncredited_until_the_rider_pays(
    temporal_env: WorkflowEnvironment, api: httpx.AsyncClient, money: Money, wechat_fake: WeChatPayFake
) -> None:
    await money.pays_by(RIDER, PaymentMethod.WECHAT, OPENID)
    with temporal_env.auto_time_skipping_disabled():
        opened = (await api.post(TOP_UPS, json={"amount_minor": 3000}, headers={"Idempotency-Key": "wx"})).json()
        assert opened["method"] == "wechat"
        key = top_up_payment_key(opened["id"])
        while not wechat_fake.orders.get(out_trade_no(key)):  # the order exists at WeChat: the rider may pay
            await asyncio.sleep(0.05)
        seen = (await api.get(f"{TOP_UPS}/{opened['id']}")).json()
        assert seen["status"] == "pending" and await balance(money.db) is None
        wechat_fake.pay(out_trade_no(key))
        outcome = await top_up_done(temporal_env, opened["workflow_id"])
    assert outcome.status == "succeeded"
    assert (await api.get(f"{TOP_UPS}/{opened['id']}")).json()["status"] == "succeeded"
    assert await balance(money.db) == 3000


async def test_a_wechat_top_up_never_paid_is_closed_and_credits_nothing(
    temporal_env: WorkflowEnvironment, api: httpx.AsyncClient, money: Money, wechat_fake: WeChatPayFake
) -> None:
    await money.pays_by(RIDER, PaymentMethod.WECHAT, OPENID)
    with temporal_env.auto_time_skipping_disabled():
        opened = (await api.post(TOP_UPS, json={"amount_minor": 100000}, headers={"Idempotency-Key": "wx"})).json()
        outcome = await top_up_done(temporal_env, opened["workflow_id"])
    assert outcome.status == "failed"
    assert wechat_fake.orders[out_trade_no(top_up_payment_key(opened["id"]))].state == "CLOSED"
    assert (await api.get(f"{TOP_UPS}/{opened['id']}")).json()["status"] == "failed"
    assert await balance(money.db) is None


@pytest.mark.parametrize(("card", "status", "credited"), [(CARD, "succeeded", 2000), (DECLINED_CARD, "failed", None)])
async def test_a_stripe_top_up_is_credited_only_when_the_card_is_charged(
    temporal_env: WorkflowEnvironment,
    api: httpx.AsyncClient,
    money: Money,
    card: str,
    status: str,
    credited: int | None,
) -> None:
    await money.pays_by(RIDER, PaymentMethod.STRIPE, card)
    opened = (await api.post(TOP_UPS, json={"amount_minor": 2000}, headers={"Idempotency-Key": "card"})).json()
    outcome = await top_up_done(temporal_env, opened["workflow_id"])
    assert (opened["method"], outcome.status, await balance(money.db)) == ("stripe", status, credited)


async def test_another_riders_top_up_does_not_exist_for_a_rider(api: httpx.AsyncClient) -> None:
    response = await api.post(
        f"/v1/riders/{OTHER_RIDER}/wallet/top-ups", json={"amount_minor": 500}, headers={"Idempotency-Key": "x"}
    )
    assert (response.status_code, response.json()["title"]) == (404, "Unknown rider")


# ------------------------------------------------------------------------------------------ goodwill


async def test_finance_credits_goodwill_with_its_reason_and_approver_to_its_own_account(
    api: httpx.AsyncClient, db: Database
) -> None:
    finance = bearer(await operator_token(db, "finance-sh-test", OperatorRole.FINANCE, ["SH"]))
    body = {"amount_minor": 800, "reason": "door jammed twice"}
    credit = await api.post(GOODWILL, json=body, headers={**finance, "Idempotency-Key": "g1"})
    again = await api.post(GOODWILL, json=body, headers={**finance, "Idempotency-Key": "g1"})
    assert (credit.status_code, again.status_code) == (201, 200), credit.json()
    assert (credit.json()["approved_by"], credit.json()["reason"]) == ("finance-sh-test", "door jammed twice")
    assert await balance(db) == 800
    assert await postings(db, "wallet_goodwill") == {"expense:goodwill": 800, f"wallet:{RIDER}": -800}
    assert await wallet_violations(db) == []


async def test_only_finance_of_the_riders_city_may_credit_goodwill(api: httpx.AsyncClient, db: Database) -> None:
    body = {"amount_minor": 800, "reason": "because"}
    callers = {
        "rider": ({}, 403),
        "ops": (bearer(await operator_token(db, "ops-sh-test", OperatorRole.OPERATOR, ["SH"])), 403),
        "finance elsewhere": (bearer(await operator_token(db, "finance-sz-test", OperatorRole.FINANCE, ["SZ"])), 404),
    }
    for who, (headers, expected) in callers.items():
        response = await api.post(GOODWILL, json=body, headers={**headers, "Idempotency-Key": who})
        assert response.status_code == expected, who
    assert await balance(db) is None


# ------------------------------------------------------------------------------------------ invariant


async def test_the_checker_reports_a_wallet_credit_nothing_pays_for(db: Database) -> None:
    async with db.transaction() as session:
        await credit_wallet(
            session,
            rider_id=RIDER,
            key="free-money",
            kind="topup",
            amount_minor=100000,
            currency="CNY",
            source="nothing",
            debit_account=provider_clearing("sandbox"),
            memo="minted",
        )
    assert await wallet_violations(db) == ["free-money"]


async def test_the_checker_reports_a_balance_its_entries_do_not_add_up_to(db: Database, money: Money) -> None:
    await money.wallet_rider(500)
    async with db.transaction() as session:  # as a lost update would leave it
        await session.execute(update(Wallet).where(Wallet.rider_id == RIDER).values(balance_minor=1500))
    report = await check_invariants(db)
    assert [(v.rule, v.subject) for v in report.violations if v.rule.startswith("wallet.")] == [
        (Rule.WALLET_BALANCE_MISMATCH, RIDER)
    ]


async def test_the_demo_networks_wallet_balances_are_backed(empty_database_url: str) -> None:
    upgrade(empty_database_url)
    engine = create_sync_engine(empty_database_url)
    seed_demo_network(engine, stations_per_city=1, riders_per_city=10, demo_pricing=False)  # rider 7 pays by wallet
    engine.dispose()
    db = Database(empty_database_url)
    try:
        assert await balance(db, "rider-sh-0007") is not None
        assert await wallet_violations(db) == []
    finally:
        await db.dispose()
