"""Reconciliation compares a day of our payments and refunds with each provider's statement and files
every difference for finance; it never corrects anything, and running a day again files nothing twice."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from temporalio.testing import WorkflowEnvironment

from swapflow.activities.reconciliation import ReconciliationActivities
from swapflow.api.app import create_app
from swapflow.cli import main
from swapflow.db.engine import Database
from swapflow.db.models import Payment, ReconciliationException, SandboxPayment, utcnow
from swapflow.payments.refunds import charge_key
from swapflow.settings import Settings, get_settings
from swapflow.workflows.payment_models import ReconcileInput, ReconcileProvider
from swapflow.workflows.reconciliation import ReconciliationWorkflow
from tests.money_harness import OTHER_RIDER, RIDER, THIRD_RIDER, Money
from tests.ops_harness import admin_headers
from tests.swap_harness import running_worker


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
        session.add(SandboxPayment(id="sbx_pay_stray", idempotency_key="swap:stray:charge", amount_minor=600,
                                   currency="CNY", status="captured"))
    return mismatched, "swap:stray:charge"


async def test_reconciliation_files_each_planted_difference_once(money: Money) -> None:
    mismatched, stray = await plant_differences(money)
    activities = ReconciliationActivities(money.db, money.providers)
    today = utcnow().date()
    report = await activities.reconcile(ReconcileProvider(day=today, provider="*"))
    again = await activities.reconcile(ReconcileProvider(day=today, provider="*"))

    sandbox = next(p for p in report.providers if p.provider == "sandbox")
    assert (sandbox.ours, sandbox.theirs, sandbox.matched, sandbox.exceptions) == (3, 4, 2, 2)
    assert again.providers == report.providers
    assert await money.count(ReconciliationException) == 2
    found = {(e.ref, e.kind, e.ours_minor, e.theirs_minor) for e in await exceptions(money)}
    assert found == {(mismatched, "amount_mismatch", 500, 600), (stray, "missing_in_ours", None, 600)}
    # Nothing was corrected: our record still says what it said.
    assert await money.count(Payment, Payment.key == mismatched, Payment.amount_minor == 500) == 1


async def exceptions(money: Money) -> list[ReconciliationException]:
    async with money.db.sessions() as session:
        return list((await session.scalars(select(ReconciliationException))).all())


async def test_reconciliation_workflow_reports_the_day_to_finance(
        temporal_env: WorkflowEnvironment, settings: Settings, money: Money) -> None:
    await plant_differences(money)
    today = utcnow().date()
    async with running_worker(temporal_env.client, settings, money.db):
        report = await temporal_env.client.execute_workflow(
            ReconciliationWorkflow.run, ReconcileInput(day=today), id=f"reconciliation/{today}",
            task_queue=settings.temporal_task_queue)
    assert {p.provider: p.exceptions for p in report.providers}["sandbox"] == 2

    with TestClient(create_app(settings), headers=await admin_headers(money.db)) as api:
        body = api.get(f"/v1/finance/reconciliation/{today.isoformat()}").json()
    assert {run["provider"] for run in body["runs"]} >= {"sandbox", "wallet", "subscription"}
    assert sorted(e["kind"] for e in body["exceptions"]) == ["amount_mismatch", "missing_in_ours"]



@pytest.fixture
def configured(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The seeded database as the one `swapflow` commands use."""
    monkeypatch.setenv("SWAPFLOW_DATABASE_URL", database_url)
    get_settings.cache_clear()
    yield database_url
    get_settings.cache_clear()


async def test_reconcile_command_prints_each_provider_and_exits_1_on_differences(
        money: Money, configured: str, capsys: pytest.CaptureFixture[str]) -> None:
    await plant_differences(money)
    today = utcnow().date().isoformat()
    exit_code = await asyncio.to_thread(main, ["reconcile", "--date", today])
    out = capsys.readouterr().out
    assert exit_code == 1
    assert f"{today} sandbox: ours 3, provider's 4, matched 2, exceptions 2" in out
