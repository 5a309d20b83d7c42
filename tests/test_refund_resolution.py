"""Finance resolves a refund the provider could not return (escalated to it): it sends it again, pays the
rider by transfer, or records that it was refunded offline. Each clears what the rider was owed in the
ledger, shows on the refund and in its audit trail, and leaves `swapflow check` clean. On the
time-skipping server with the real worker, database and sandbox provider."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import delete, select
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from swapflow.db.engine import Database
from swapflow.db.money import LedgerPosting, SandboxPayment
from swapflow.db.ops import Alert
from swapflow.domain.ops import OperatorRole
from swapflow.ops.invariants import check_invariants
from swapflow.payments.provider import REFUND_NOTIFICATION_SIGNAL, RefundStatus, refund_key, refund_submission_key
from swapflow.payments.refunds import charge_key
from swapflow.settings import Settings
from swapflow.workflows.refund_contract import RefundOutcome, refund_workflow_id
from tests.api_harness import app_sharing
from tests.conftest import test_server_path as time_skipping_server_path
from tests.money_harness import PRICE, Money
from tests.ops_harness import bearer, operator_token
from tests.swap_harness import running_worker
from tests.test_refund_workflow import start_refund, until_submitted


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.updated(payments={"sandbox_refund_processing_s": 10 * 86400.0})


@pytest.fixture(scope="module")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=time_skipping_server_path(), data_converter=pydantic_data_converter
    )
    yield env
    await env.shutdown()


@pytest.fixture
async def money(temporal_env: WorkflowEnvironment, settings: Settings, db: Database) -> AsyncIterator[Money]:
    async with running_worker(temporal_env.client, settings, db):
        yield await Money(db, settings).ready()


@pytest.fixture
async def finance(
    temporal_env: WorkflowEnvironment, settings: Settings, db: Database, money: Money
) -> AsyncIterator[httpx.AsyncClient]:
    """The API as a finance account of Shanghai (the test riders' city), sharing the test's Temporal client."""
    app = app_sharing(settings, db, temporal_env.client)
    headers = bearer(await operator_token(db, "finance-1", OperatorRole.FINANCE, ["SH"]))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api", headers=headers) as api:
        yield api


async def escalated(env: WorkflowEnvironment, settings: Settings, money: Money, status: RefundStatus) -> str:
    """A failed swap's refund, ended by the provider in `status` and so escalated to finance."""
    order_id = await money.failed_after_charge()
    refund_id, handle = await start_refund(env, settings, order_id)
    await until_submitted(money, refund_key(refund_id))
    await money.sandbox.settle_refund(refund_key(refund_id), status)
    assert (await handle.result()).state == "escalated"
    return refund_id


async def balance(db: Database, account: str) -> int:
    async with db.sessions() as session:
        return sum(await session.scalars(select(LedgerPosting.amount_minor).where(LedgerPosting.account == account)))


async def test_an_abnormal_refund_paid_by_bank_transfer_is_cleared_against_the_bank(
    temporal_env: WorkflowEnvironment, settings: Settings, money: Money, finance: httpx.AsyncClient
) -> None:
    refund_id = await escalated(temporal_env, settings, money, RefundStatus.ABNORMAL)

    response = await finance.post(
        f"/v1/finance/refunds/{refund_id}/paid-by-transfer",
        json={"method": "bank", "reference": "TRX-2026-0042", "note": "card cancelled; paid to new account"},
    )

    refund = response.json()
    assert (refund["status"], refund["resolution"], refund["resolution_method"], refund["resolution_ref"]) == (
        "succeeded",
        "paid_by_transfer",
        "bank",
        "TRX-2026-0042",
    )
    assert refund["resolved_by"] == "finance-1" and refund["resolved_at"] is not None
    assert await money.ledger_kinds(refund["order_id"]) == ["swap_charge", "swap_refund", "refund_resolved"]
    assert (await balance(money.db, "refunds_payable"), await balance(money.db, "cash:bank")) == (0, -PRICE)
    assert await money.count(Alert, Alert.kind == "refund_escalated", Alert.status == "open") == 0
    assert (await finance.get("/v1/finance/refunds/stuck")).json() == []
    report = await check_invariants(money.db)
    assert report.ok, report.violations


async def test_an_abnormal_refund_refunded_offline_is_cleared_against_its_provider(
    temporal_env: WorkflowEnvironment, settings: Settings, money: Money, finance: httpx.AsyncClient
) -> None:
    refund_id = await escalated(temporal_env, settings, money, RefundStatus.ABNORMAL)

    response = await finance.post(
        f"/v1/finance/refunds/{refund_id}/refunded-offline", json={"reference": "merchant-portal 88213"}
    )

    assert (response.json()["resolution"], response.json()["resolution_method"]) == ("refunded_offline", "sandbox")
    assert await balance(money.db, "refunds_payable") == 0
    assert await balance(money.db, "provider_clearing:sandbox") == 0  # charged in, refunded out
    report = await check_invariants(money.db)
    assert report.ok, report.violations


async def test_a_failed_refund_resubmitted_by_finance_lands_through_a_new_submission(
    temporal_env: WorkflowEnvironment, settings: Settings, money: Money, finance: httpx.AsyncClient
) -> None:
    refund_id = await escalated(temporal_env, settings, money, RefundStatus.FAILED)

    response = await finance.post(f"/v1/finance/refunds/{refund_id}/resubmit", json={"note": "bank fixed"})
    second = refund_submission_key(refund_id, 2)
    await until_submitted(money, second)
    landed_at_provider = await money.sandbox.settle_refund(second, RefundStatus.SUCCEEDED)
    # The provider's notification reaches the new run under the refund's workflow id.
    rerun = temporal_env.client.get_workflow_handle(refund_workflow_id(refund_id), result_type=RefundOutcome)
    await rerun.signal(REFUND_NOTIFICATION_SIGNAL, landed_at_provider)
    # Its result by run id: the time-skipping server does not follow a reused id to its latest run.
    outcome = await temporal_env.client.get_workflow_handle(
        rerun.id, run_id=(await rerun.describe()).run_id, result_type=RefundOutcome
    ).result()

    assert (response.json()["status"], response.json()["resolution"]) == ("requested", "resubmitted")
    assert (outcome.state, outcome.attempts) == ("succeeded", 2)
    landed = await money.refund(refund_id)
    assert (landed.status, landed.key, landed.resolution) == ("succeeded", second, "resubmitted")
    assert await money.ledger_kinds(landed.order_id or "") == ["swap_charge", "swap_refund", "refund_settled"]
    report = await check_invariants(money.db)
    assert report.ok, report.violations


async def test_a_refund_no_provider_ever_accepted_is_owed_and_cleared_when_finance_pays_it(
    temporal_env: WorkflowEnvironment, settings: Settings, money: Money, finance: httpx.AsyncClient
) -> None:
    order_id = await money.failed_after_charge()
    async with money.db.transaction() as session:  # the provider lost the payment: the refund is declined
        await session.execute(delete(SandboxPayment).where(SandboxPayment.idempotency_key == charge_key(order_id)))
    refund_id, handle = await start_refund(temporal_env, settings, order_id)
    assert (await handle.result()).state == "escalated"
    assert await money.ledger_kinds(order_id) == ["swap_charge"]  # never owed: no provider took it

    await finance.post(
        f"/v1/finance/refunds/{refund_id}/paid-by-transfer", json={"method": "wechat", "reference": "w1"}
    )

    assert await money.ledger_kinds(order_id) == ["swap_charge", "swap_refund", "refund_resolved"]
    assert await balance(money.db, "refunds_payable") == 0
    report = await check_invariants(money.db)
    assert report.ok, report.violations


async def test_only_an_escalated_refund_is_resolved_and_only_once(
    temporal_env: WorkflowEnvironment, settings: Settings, money: Money, finance: httpx.AsyncClient
) -> None:
    refund_id = await escalated(temporal_env, settings, money, RefundStatus.ABNORMAL)
    first = await finance.post(f"/v1/finance/refunds/{refund_id}/refunded-offline", json={"reference": "p1"})
    second = await finance.post(
        f"/v1/finance/refunds/{refund_id}/paid-by-transfer", json={"method": "bank", "reference": "b1"}
    )

    assert first.status_code == 200
    assert second.status_code == 409 and second.json()["title"] == "Refund not escalated"
    assert await balance(money.db, "cash:bank") == 0  # paid once


async def test_a_city_scoped_finance_account_cannot_resolve_another_citys_refund(
    temporal_env: WorkflowEnvironment, settings: Settings, money: Money, finance: httpx.AsyncClient
) -> None:
    refund_id = await escalated(temporal_env, settings, money, RefundStatus.ABNORMAL)  # a Shanghai rider's
    finance_sz = bearer(await operator_token(money.db, "finance-sz", OperatorRole.FINANCE, ["SZ"]))

    response = await finance.post(
        f"/v1/finance/refunds/{refund_id}/refunded-offline", json={"reference": "p1"}, headers=finance_sz
    )

    assert response.status_code == 404
    assert (await money.refund(refund_id)).status == "escalated"


async def test_the_resolution_is_in_the_refunds_audit_trail(
    temporal_env: WorkflowEnvironment, settings: Settings, money: Money, finance: httpx.AsyncClient
) -> None:
    refund_id = await escalated(temporal_env, settings, money, RefundStatus.ABNORMAL)
    await finance.post(
        f"/v1/finance/refunds/{refund_id}/paid-by-transfer",
        json={"method": "bank", "reference": "TRX-9", "note": "rider's card closed"},
    )

    [event] = (await finance.get(f"/v1/audit/refund/{refund_id}")).json()

    assert (event["actor"], event["action"], event["reason"]) == (
        "finance-1",
        "paid_by_transfer",
        "rider's card closed",
    )
    assert (event["before"]["status"], event["after"]["status"]) == ("escalated", "succeeded")
    assert (event["before"]["resolution_ref"], event["after"]["resolution_ref"]) == (None, "TRX-9")
