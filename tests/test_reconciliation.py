"""Reconciliation compares a day three ways (the ledger with our payments and refunds, those with each
provider's statement, each movement dated as its provider dates it) and files every difference for finance
with an alert for the day; it never corrects anything, and running a day again files nothing twice."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select, update
from temporalio.testing import WorkflowEnvironment

from swapflow.activities.reconciliation import ReconciliationActivities
from swapflow.api.app import create_app
from swapflow.cli import main
from swapflow.db.engine import Database
from swapflow.db.money import LedgerPosting, LedgerTransaction, Payment, ReconciliationException, Refund, SandboxPayment
from swapflow.db.ops import Alert
from swapflow.domain.clock import utcnow
from swapflow.domain.ops import OperatorRole
from swapflow.payments.ledger import (
    DEFERRED_REVENUE,
    REFUNDED_REVENUE,
    REFUNDS_PAYABLE,
    Posting,
    post_transaction,
    provider_clearing,
)
from swapflow.payments.provider import ChargeRequest, RefundRequest, refund_key
from swapflow.payments.refunds import charge_key
from swapflow.payments.wechat import WeChatPayProvider, out_refund_no, out_trade_no
from swapflow.services.reconciliation import reconcile_provider
from swapflow.settings import Settings, get_settings
from swapflow.workflows.reconciliation import ReconciliationWorkflow
from swapflow.workflows.reconciliation_contract import ReconcileInput, ReconcileProvider
from tests.history_recording import RecordHistory
from tests.money_harness import OTHER_RIDER, PRICE, RIDER, THIRD_RIDER, Money
from tests.ops_harness import admin_headers, bearer, operator_token
from tests.payment_fakes import wechat_fake  # noqa: F401  (fixture)
from tests.swap_harness import running_worker
from tests.wechat_fake import WeChatPayFake


@pytest.fixture
async def money(db: Database, settings: Settings) -> Money:
    return await Money(db, settings).ready()


async def plant_differences(money: Money) -> tuple[str, str]:
    """Three charged swaps, then: one capture we record as less than the provider took, and a capture
    at the provider we have no record of. Returns (the mismatched key, the unknown key)."""
    await money.charged(RIDER)
    mismatched = charge_key(await money.charged(OTHER_RIDER))
    await money.charged(THIRD_RIDER)
    async with money.db.transaction() as session:
        await session.execute(update(Payment).where(Payment.key == mismatched).values(amount_minor=500))
        session.add(
            SandboxPayment(
                id="sbx_pay_stray",
                idempotency_key="swap:stray:charge",
                amount_minor=600,
                currency="CNY",
                status="captured",
            )
        )
    return mismatched, "swap:stray:charge"


async def test_reconciliation_files_each_planted_difference_once(money: Money) -> None:
    mismatched, stray = await plant_differences(money)
    activities = ReconciliationActivities(money.db, money.providers)
    today = utcnow().date()
    report = await activities.reconcile(ReconcileProvider(day=today, provider="*"))
    again = await activities.reconcile(ReconcileProvider(day=today, provider="*"))

    sandbox = next(p for p in report.providers if p.provider == "sandbox")
    assert (sandbox.ours, sandbox.theirs, sandbox.matched, sandbox.exceptions) == (3, 4, 2, 3)
    assert again.providers == report.providers
    assert await money.count(ReconciliationException) == 3
    found = {(e.ref, e.kind, e.ours_minor, e.theirs_minor) for e in await exceptions(money)}
    # Our record of the mismatched capture disagrees with the provider and with the ledger alike.
    assert found == {
        (mismatched, "amount_mismatch", 500, 600),
        (stray, "missing_in_ours", None, 600),
        (f"ledger:{mismatched}", "ledger_mismatch", 500, 600),
    }
    # Nothing was corrected: our record still says what it said.
    assert await money.count(Payment, Payment.key == mismatched, Payment.amount_minor == 500) == 1


async def reconcile_today(money: Money) -> dict[str, int]:
    """Exceptions per provider of today's reconciliation."""
    report = await ReconciliationActivities(money.db, money.providers).reconcile(
        ReconcileProvider(day=utcnow().date(), provider="*")
    )
    return {p.provider: p.exceptions for p in report.providers}


async def ledger_transaction_of(money: Money, key: str) -> LedgerTransaction:
    async with money.db.sessions() as session:
        found = await session.scalar(select(LedgerTransaction).where(LedgerTransaction.key == key))
    assert found is not None
    return found


async def test_a_charge_missing_from_the_ledger_is_found(money: Money) -> None:
    key = charge_key(await money.charged())
    booked = await ledger_transaction_of(money, key)
    async with money.db.transaction() as session:
        await session.execute(delete(LedgerPosting).where(LedgerPosting.transaction_id == booked.id))
        await session.execute(delete(LedgerTransaction).where(LedgerTransaction.id == booked.id))

    assert (await reconcile_today(money))["sandbox"] == 1
    assert [(e.ref, e.kind, e.ours_minor, e.theirs_minor) for e in await exceptions(money)] == [
        (f"ledger:{key}", "missing_in_ledger", PRICE, None)
    ]


async def test_a_charge_booked_short_in_the_ledger_is_found(money: Money) -> None:
    key = charge_key(await money.charged())
    booked = await ledger_transaction_of(money, key)
    async with money.db.transaction() as session:  # 500 of the 600 the provider took, still balanced
        for sign in (1, -1):
            await session.execute(
                update(LedgerPosting)
                .where(LedgerPosting.transaction_id == booked.id, LedgerPosting.amount_minor == sign * PRICE)
                .values(amount_minor=sign * 500)
            )

    assert (await reconcile_today(money))["sandbox"] == 1
    assert [(e.ref, e.kind, e.ours_minor, e.theirs_minor) for e in await exceptions(money)] == [
        (f"ledger:{key}", "ledger_mismatch", PRICE, 500)
    ]


async def test_a_charge_in_the_ledger_without_a_payment_behind_it_is_found(money: Money) -> None:
    await money.charged()
    async with money.db.transaction() as session:
        await post_transaction(
            session,
            key="swap:ghost:charge",
            kind="swap_charge",
            currency="CNY",
            postings=[Posting(provider_clearing("sandbox"), PRICE), Posting(DEFERRED_REVENUE, -PRICE)],
        )

    assert (await reconcile_today(money))["sandbox"] == 1
    assert [(e.ref, e.kind, e.ours_minor, e.theirs_minor) for e in await exceptions(money)] == [
        ("ledger:swap:ghost:charge", "missing_in_payments", None, PRICE)
    ]


async def test_a_day_with_exceptions_raises_one_alert_per_provider_and_a_clean_day_none(money: Money) -> None:
    assert set((await reconcile_today(money)).values()) == {0}
    assert await money.count(Alert, Alert.kind == "reconciliation_exceptions") == 0

    await plant_differences(money)
    await reconcile_today(money)
    await reconcile_today(money)
    async with money.db.sessions() as session:
        alerts = (await session.scalars(select(Alert).where(Alert.kind == "reconciliation_exceptions"))).all()
    today = utcnow().date().isoformat()
    assert [(a.dedupe_key, a.status, a.occurrences) for a in alerts] == [
        (f"reconciliation_exceptions:sandbox:{today}", "open", 2)
    ]
    assert "3 exception(s)" in alerts[0].message


async def test_a_charge_recorded_before_midnight_and_captured_after_it_is_reconciled_on_its_capture_day(
    money: Money,
) -> None:
    key = charge_key(await money.charged())
    today = utcnow().date()
    yesterday = today - timedelta(days=1)
    async with money.db.transaction() as session:  # our record was written just before midnight
        await session.execute(
            update(Payment)
            .where(Payment.key == key)
            .values(created_at=datetime.combine(yesterday, time(23, 59, 59), tzinfo=UTC))
        )
    activities = ReconciliationActivities(money.db, money.providers)

    for day in (yesterday, today):
        report = await activities.reconcile(ReconcileProvider(day=day, provider="sandbox"))
        assert [(p.ours, p.theirs, p.exceptions) for p in report.providers] == [
            (0, 0, 0) if day == yesterday else (1, 1, 0)
        ]


def at(day: date, hour: int) -> datetime:
    return datetime.combine(day, time(hour), tzinfo=UTC)


async def test_a_wechat_refund_submitted_one_day_and_succeeding_the_next_is_reconciled_on_its_success_day(
    db: Database, settings: Settings, wechat_fake: WeChatPayFake
) -> None:
    wechat = WeChatPayProvider(settings.updated(wechat=wechat_fake.settings_values()))
    key, refund_id, day = "swap:late-refund:charge", "late-refund", date(2026, 11, 2)
    paid_at, submitted_at, succeeded_at = at(day, 10), at(day, 20), at(day + timedelta(days=1), 2)
    await wechat.charge(ChargeRequest(key=key, amount_minor=PRICE, currency="CNY", rider_id=RIDER, payer="o-1"))
    wechat_fake.pay(out_trade_no(key)).success_time = paid_at.timestamp()
    captured = await wechat.find_payment(key)
    assert captured is not None
    await wechat.refund(RefundRequest(key=refund_key(refund_id), payment=captured, amount_minor=PRICE, reason="late"))
    landed = wechat_fake.settle_refund(out_refund_no(refund_key(refund_id)), "SUCCESS")
    landed.created, landed.success_time = submitted_at.timestamp(), succeeded_at.timestamp()
    async with db.transaction() as session:  # our record and ledger, as the charge and refund leave them
        session.add(
            Payment(
                key=key,
                rider_id=RIDER,
                method="wechat",
                amount_minor=PRICE,
                currency="CNY",
                status="captured",
                created_at=paid_at,
                captured_at=paid_at,
            )
        )
        session.add(
            Refund(
                id=refund_id,
                key=refund_key(refund_id),
                payment_key=key,
                rider_id=RIDER,
                method="wechat",
                amount_minor=PRICE,
                currency="CNY",
                reason="late",
                origin="operator",
                status="succeeded",
                provider_status="succeeded",
                submitted_at=submitted_at,
                succeeded_at=succeeded_at,
            )
        )
        await post_transaction(
            session,
            key=key,
            kind="swap_charge",
            currency="CNY",
            postings=[Posting(provider_clearing("wechat"), PRICE), Posting(DEFERRED_REVENUE, -PRICE)],
        )
        await post_transaction(
            session,
            key=f"refund:{refund_id}",
            kind="refund",
            currency="CNY",
            postings=[Posting(REFUNDED_REVENUE, PRICE), Posting(REFUNDS_PAYABLE, -PRICE)],
        )

    submitted = await reconcile_provider(db, wechat, day)
    succeeded = await reconcile_provider(db, wechat, day + timedelta(days=1))
    assert (submitted.ours, submitted.theirs, submitted.exceptions) == (1, 1, 0)  # the charge only
    assert (succeeded.ours, succeeded.theirs, succeeded.exceptions) == (1, 1, 0)  # the refund


async def exceptions(money: Money) -> list[ReconciliationException]:
    async with money.db.sessions() as session:
        return list((await session.scalars(select(ReconciliationException))).all())


@pytest.mark.records_history
async def test_reconciliation_workflow_reports_the_day_to_finance(
    temporal_env: WorkflowEnvironment, settings: Settings, money: Money, record_history: RecordHistory
) -> None:
    await plant_differences(money)
    today = utcnow().date()
    async with running_worker(temporal_env.client, settings, money.db):
        report = await temporal_env.client.execute_workflow(
            ReconciliationWorkflow.run,
            ReconcileInput(day=today),
            id=f"reconciliation/{today}",
            task_queue=settings.temporal.task_queue,
        )
    await record_history(f"reconciliation/{today}", "reconciliation_day")
    assert {p.provider: p.exceptions for p in report.providers}["sandbox"] == 3

    with TestClient(create_app(settings), headers=await admin_headers(money.db)) as api:
        body = api.get(f"/v1/finance/reconciliation/{today.isoformat()}").json()
    assert {run["provider"] for run in body["runs"]} >= {"sandbox", "wallet", "subscription"}
    assert sorted(e["kind"] for e in body["exceptions"]) == ["amount_mismatch", "ledger_mismatch", "missing_in_ours"]


async def test_finance_marks_a_difference_resolved_with_a_note_once(money: Money, settings: Settings) -> None:
    await plant_differences(money)
    await reconcile_today(money)
    [difference, *_] = await exceptions(money)
    finance = bearer(await operator_token(money.db, "finance-1", OperatorRole.FINANCE))
    path = f"/v1/finance/reconciliation/exceptions/{difference.id}/resolve"

    with TestClient(create_app(settings), headers=finance) as api:
        resolved = api.post(path, json={"note": "provider fee booked by hand"}).json()
        again = api.post(path, json={"note": "twice"})
        day = api.get(f"/v1/finance/reconciliation/{utcnow().date().isoformat()}").json()
        [event] = api.get(f"/v1/audit/reconciliation_exception/{difference.id}").json()

    assert (resolved["status"], resolved["resolved_by"], resolved["resolution_note"]) == (
        "resolved",
        "finance-1",
        "provider fee booked by hand",
    )
    assert resolved["resolved_at"] is not None
    assert again.status_code == 409
    assert [e["status"] for e in day["exceptions"]].count("resolved") == 1
    assert (event["actor"], event["before"]["status"], event["after"]["status"]) == ("finance-1", "open", "resolved")
    await reconcile_today(money)  # the day reconciled again leaves the resolution as it was
    assert sum(1 for e in await exceptions(money) if e.status == "resolved") == 1


@pytest.fixture
def configured(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The seeded database as the one `swapflow` commands use."""
    monkeypatch.setenv("SWAPFLOW_DATABASE_URL", database_url)
    get_settings.cache_clear()
    yield database_url
    get_settings.cache_clear()


async def test_reconcile_command_prints_each_provider_and_exits_1_on_differences(
    money: Money, configured: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await plant_differences(money)
    today = utcnow().date().isoformat()
    exit_code = await asyncio.to_thread(main, ["reconcile", "--date", today])
    out = capsys.readouterr().out
    assert exit_code == 1
    assert f"{today} sandbox: ours 3, provider's 4, matched 2, exceptions 3" in out
