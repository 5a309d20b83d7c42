"""Finance in the console, over HTTP with a signed-in session: settlement runs listed, filtered and read
with their lines, decisions and payouts, their statement downloaded, and acted on through the forms
(approve, the four-eyes refusal shown, reject with a reason) on the time-skipping server with the real
settlement activities; the refunds that need finance and their resolution; reconciliation differences
resolved; revenue and refunds per day for the chart. Finance of one city sees only its own."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from swapflow.activities.settlement import SettlementActivities
from swapflow.db.commissions import SettlementRun
from swapflow.db.engine import Database
from swapflow.db.money import ReconciliationException, Refund
from swapflow.db.swaps import SwapOrder
from swapflow.domain.clock import utcnow
from swapflow.domain.ops import OperatorRole
from swapflow.payments.bank_payouts import BankPayoutProvider
from swapflow.payments.ledger import (
    DEFERRED_REVENUE,
    REFUNDED_REVENUE,
    REFUNDS_PAYABLE,
    SWAP_REVENUE,
    Posting,
    post_transaction,
)
from swapflow.payments.payouts import PayoutMethod
from swapflow.payments.registry import payout_providers_from_settings
from swapflow.services import settlements
from swapflow.services.console_finance import revenue_and_refunds
from swapflow.settings import Settings
from swapflow.workflows.settlement import SettlementWorkflow
from swapflow.workflows.settlement_contract import RunStatus, settlement_run_id, settlement_workflow_id
from tests.api_harness import app_sharing
from tests.conftest import test_server_path as time_skipping_server_path
from tests.console_harness import console_client, csrf_of, sign_in
from tests.ops_harness import operator_token
from tests.test_settlement_api import (  # the runs as a run records them, and the demo-free partners
    AGENT_SH,
    HOST_BER,
    HOST_SH,
    LAST,
    PREPARER,
    Run,
    host_with_last_months_swaps,
    insert,
    partners,
)

__all__ = ["partners"]  # a fixture


@pytest.fixture
def console(settings: Settings, partners: None) -> Iterator[TestClient]:
    with console_client(settings) as client:
        yield client


@pytest.fixture
async def finance_sh(db: Database) -> str:
    return await operator_token(db, "finance-sh", OperatorRole.FINANCE, ["SH"])


# ---------------------------------------------------------------------------------- runs


async def test_finance_lists_its_runs_filtered_by_status_and_partner(
    console: TestClient, db: Database, finance_sh: str
) -> None:
    paid, waiting, agents, berlin = await insert(
        db,
        Run(HOST_SH, 1, RunStatus.PAID),
        Run(HOST_SH, 2),
        Run(AGENT_SH, 2),
        Run(HOST_BER, 2, city_code="BER", currency="EUR"),
    )
    sign_in(console, finance_sh)

    def listed(**params: str) -> set[str]:
        page = console.get("/console/finance/settlements", params=params)
        assert page.status_code == 200
        return set(re.findall(r'href="/console/finance/settlements/([^"/]+)"', page.text))

    assert listed() == {paid, waiting, agents}  # not Berlin's
    assert listed(status="awaiting_approval") == {waiting, agents}
    assert listed(status="awaiting_approval", partner=AGENT_SH) == {agents}
    assert berlin not in listed(period="2026-02")


async def test_the_runs_list_pages_on(console: TestClient, db: Database, finance_sh: str) -> None:
    await insert(db, *(Run(HOST_SH, month) for month in range(1, 4)))
    sign_in(console, finance_sh)
    first = console.get("/console/finance/settlements", params={"limit": 2})
    next_link = re.search(r'href="\?([^"]+)" rel="next"', first.text)
    assert next_link is not None
    second = console.get(f"/console/finance/settlements?{next_link.group(1).replace('&amp;', '&')}")
    assert re.findall(r"/finance/settlements/([^\"/]+)\"", first.text) == [
        settlement_run_id(HOST_SH, "2026-03"),
        settlement_run_id(HOST_SH, "2026-02"),
    ]
    assert re.findall(r"/finance/settlements/([^\"/]+)\"", second.text) == [settlement_run_id(HOST_SH, "2026-01")]


async def test_a_runs_page_shows_its_plan_total_decisions_payouts_and_lines(
    console: TestClient, db: Database, finance_sh: str
) -> None:
    [run_id] = await insert(
        db,
        Run(
            HOST_SH,
            3,
            RunStatus.PAYOUT_FAILED,
            decisions=[("rejected", "finance-a", "wrong plan"), ("approved", "finance-b", "")],
            payouts=[("failed", "po_1", "account closed")],
        ),
    )
    sign_in(console, finance_sh)
    page = console.get(f"/console/finance/settlements/{run_id}").text

    for shown in (
        "plan-host version 2",
        "121.00 CNY",  # the total
        "123.45 CNY",  # the first line
        "volume tier at 700 bp",
        "wrong plan",
        "finance-b",
        "account closed",
        "payout failed",
        f"settlement/{HOST_SH}/2026-03",
    ):
        assert shown in page, shown
    assert "Retry the payout" in page and ">Approve<" not in page


async def test_a_runs_page_renders_without_its_workflow_history(
    console: TestClient, db: Database, finance_sh: str
) -> None:
    [run_id] = await insert(db, Run(HOST_SH, 3))
    sign_in(console, finance_sh)
    page = console.get(f"/console/finance/settlements/{run_id}")

    # No workflow runs for it here (no Temporal, or none under its id): the rest of the page stands.
    assert page.status_code == 200 and "Workflow history unavailable" in page.text
    assert "123.45 CNY" in page.text


async def test_a_runs_statement_downloads_as_csv(console: TestClient, db: Database, finance_sh: str) -> None:
    [run_id] = await insert(db, Run(HOST_SH, 3))
    sign_in(console, finance_sh)
    answer = console.get(f"/console/finance/settlements/{run_id}/statement.csv")

    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    assert f'filename="statement-{run_id}.csv"' in answer.headers["content-disposition"]
    assert answer.text.splitlines()[-1].split(",")[4:6] == ["total", "total"]


async def test_another_citys_run_does_not_exist_for_finance_of_one_city(
    console: TestClient, db: Database, finance_sh: str
) -> None:
    [berlin] = await insert(db, Run(HOST_BER, 1, city_code="BER", currency="EUR"))
    csrf = sign_in(console, finance_sh)
    assert console.get(f"/console/finance/settlements/{berlin}").status_code == 404
    assert console.get(f"/console/finance/settlements/{berlin}/statement.csv").status_code == 404
    approve = console.post(f"/console/finance/settlements/{berlin}/approve", data={"csrf_token": csrf})
    assert approve.status_code == 404


async def test_operators_may_not_open_finance_pages(console: TestClient, db: Database) -> None:
    sign_in(console, await operator_token(db, "ops-sh", OperatorRole.OPERATOR, ["SH"]))
    assert console.get("/console/finance").status_code == 403
    assert console.get("/console/finance/settlements").status_code == 403


async def test_an_approval_posted_without_its_csrf_token_is_refused(
    console: TestClient, db: Database, finance_sh: str
) -> None:
    [run_id] = await insert(db, Run(HOST_SH, 1))
    sign_in(console, finance_sh)
    answer = console.post(f"/console/finance/settlements/{run_id}/approve")

    assert answer.status_code == 403 and "CSRF" in answer.text
    async with db.sessions() as session:
        run = await session.get(SettlementRun, run_id)
    assert run is not None and run.status == RunStatus.AWAITING_APPROVAL


async def test_a_rejection_without_a_reason_is_refused_with_a_message(
    console: TestClient, db: Database, finance_sh: str
) -> None:
    [run_id] = await insert(db, Run(HOST_SH, 1))
    csrf = sign_in(console, finance_sh)
    answer = console.post(
        f"/console/finance/settlements/{run_id}/reject", data={"csrf_token": csrf}, headers={"HX-Request": "true"}
    )
    assert answer.status_code == 200 and 'role="alert"' in answer.text and "a rejection says why" in answer.text


# ---------------------------------------------------------------------------------- refunds


async def escalated_refund(db: Database, rider_id: str, refund_id: str) -> None:
    async with db.transaction() as session:
        session.add(
            Refund(
                id=refund_id,
                key=f"refund:{refund_id}",
                payment_key=f"pay:{refund_id}",
                rider_id=rider_id,
                method="wechat",
                amount_minor=500,
                currency="CNY",
                reason="door jammed",
                origin="operator",
                status="escalated",
                escalated=True,
            )
        )


async def test_finance_sees_the_escalated_refunds_of_its_cities_riders(
    console: TestClient, db: Database, finance_sh: str
) -> None:
    await escalated_refund(db, "rider-sh-0001", "r-sh")
    await escalated_refund(db, "rider-sz-0001", "r-sz")
    sign_in(console, finance_sh)
    page = console.get("/console/finance/refunds").text
    assert "r-sh" in page and "r-sz" not in page and "Paid by transfer" in page


async def test_an_escalated_refund_paid_by_transfer_is_resolved_through_the_form(
    console: TestClient, db: Database, finance_sh: str
) -> None:
    await escalated_refund(db, "rider-sh-0001", "r-sh")
    csrf = sign_in(console, finance_sh)
    answer = console.post(
        "/console/finance/refunds/r-sh/paid-by-transfer",
        data={"csrf_token": csrf, "method": "bank", "reference": "BK-7", "note": "rider's account"},
        headers={"HX-Request": "true"},
    )
    assert answer.status_code == 200 and "paid by bank transfer BK-7" in answer.text
    async with db.sessions() as session:
        refund = await session.get(Refund, "r-sh")
    assert refund is not None and (refund.status, refund.resolved_by) == ("succeeded", "finance-sh")


async def test_another_citys_refund_cannot_be_resolved(console: TestClient, db: Database, finance_sh: str) -> None:
    await escalated_refund(db, "rider-sz-0001", "r-sz")
    csrf = sign_in(console, finance_sh)
    answer = console.post("/console/finance/refunds/r-sz/refunded-offline", data={"csrf_token": csrf, "reference": "x"})
    assert answer.status_code == 404


async def test_a_refunds_page_shows_how_finance_resolved_it_and_its_workflow_history(
    console: TestClient, db: Database, finance_sh: str
) -> None:
    await escalated_refund(db, "rider-sh-0001", "r-sh")
    csrf = sign_in(console, finance_sh)
    console.post(
        "/console/finance/refunds/r-sh/paid-by-transfer",
        data={"csrf_token": csrf, "method": "bank", "reference": "BK-7", "note": "rider's account"},
    )
    page = console.get("/console/finance/refunds/r-sh")

    assert page.status_code == 200
    assert "reference BK-7, by finance-sh" in page.text
    # Its workflow `refund/r-sh` never ran here: the history says so and the rest of the page stands.
    assert "Workflow history unavailable" in page.text


async def test_another_citys_refund_page_does_not_exist(console: TestClient, db: Database, finance_sh: str) -> None:
    await escalated_refund(db, "rider-sz-0001", "r-sz")
    sign_in(console, finance_sh)
    assert console.get("/console/finance/refunds/r-sz").status_code == 404


# ---------------------------------------------------------------------------------- reconciliation


async def a_difference(db: Database) -> int:
    async with db.transaction() as session:
        row = ReconciliationException(
            day="2026-12-01",
            provider="wechat",
            ref="swap:ord-1:charge",
            kind="amount_mismatch",
            ours_minor=500,
            theirs_minor=450,
            detail="amounts differ",
        )
        session.add(row)
        await session.flush()
        return row.id


async def test_a_reconciliation_difference_is_resolved_with_a_note(
    console: TestClient, db: Database, finance_sh: str
) -> None:
    difference = await a_difference(db)
    csrf = sign_in(console, finance_sh)
    assert "amounts differ" in console.get("/console/finance/reconciliation").text
    path = f"/console/finance/reconciliation/{difference}/resolve"
    without = console.post(path, data={"csrf_token": csrf}, headers={"HX-Request": "true"})
    assert 'role="alert"' in without.text
    resolved = console.post(path, data={"csrf_token": csrf, "note": "fee withheld"}, headers={"HX-Request": "true"})
    assert resolved.status_code == 200 and "fee withheld (finance-sh" in resolved.text
    assert "amounts differ" not in console.get("/console/finance/reconciliation").text  # open ones only


# ---------------------------------------------------------------------------------- revenue


async def revenue_of_a_swap(db: Database, order_id: str, cabinet_id: str, rider_id: str, refunded: int = 0) -> None:
    """A completed swap's revenue of 600, and a refund of `refunded` of it."""
    async with db.transaction() as session:
        session.add(SwapOrder(id=order_id, rider_id=rider_id, cabinet_id=cabinet_id, idempotency_key=order_id))
        await session.flush()
        await post_transaction(
            session,
            key=f"swap:{order_id}:revenue",
            kind="swap_revenue",
            currency="CNY",
            order_id=order_id,
            postings=[Posting(DEFERRED_REVENUE, 600), Posting(SWAP_REVENUE, -600)],
        )
        if refunded:
            await post_transaction(
                session,
                key=f"refund:{order_id}",
                kind="refund",
                currency="CNY",
                order_id=order_id,
                postings=[Posting(REFUNDED_REVENUE, refunded), Posting(REFUNDS_PAYABLE, -refunded)],
            )


async def test_revenue_and_refunds_are_summed_per_day_for_the_callers_cities(db: Database) -> None:
    await revenue_of_a_swap(db, "ord-sh-1", "cab-sh-001-1", "rider-sh-0001", refunded=200)
    await revenue_of_a_swap(db, "ord-sh-2", "cab-sh-001-1", "rider-sh-0002")
    await revenue_of_a_swap(db, "ord-sz-1", "cab-sz-001-1", "rider-sz-0001")
    today = utcnow().date()
    async with db.sessions() as session:
        sh = await revenue_and_refunds(session, start=today - timedelta(days=1), end=today, cities=["SH"])
        everywhere = await revenue_and_refunds(session, start=today, end=today, cities=None)

    assert [(f.currency, f.days, f.revenue_minor, f.refunds_minor) for f in sh] == [
        ("CNY", [today - timedelta(days=1), today], [0, 1200], [0, 200])
    ]
    assert everywhere[0].revenue_minor == [1800]


async def test_the_finance_overview_charts_revenue_and_refunds(
    console: TestClient, db: Database, finance_sh: str
) -> None:
    await revenue_of_a_swap(db, "ord-sh-1", "cab-sh-001-1", "rider-sh-0001", refunded=200)
    sign_in(console, finance_sh)
    page = console.get("/console/finance").text
    found = re.search(r'<script type="application/json" id="money-cny-data">(.*?)</script>', page, re.S)
    assert found is not None
    data = json.loads(found.group(1))
    assert [s["label"] for s in data["series"]] == ["revenue", "refunds"]
    assert (data["series"][0]["values"][-1], data["series"][1]["values"][-1]) == (6.0, 2.0)
    assert "uPlot.iife.min.js" in page


# ---------------------------------------------------------------------------------- acting on a run
# On a time-skipping server of this module's own with the settlement workflows' real activities, as in
# test_settlement_api: a new host's run of last month, prepared by PREPARER, awaiting approval.

APPROVER = "fin-approver"


@pytest.fixture(scope="module")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=time_skipping_server_path(), data_converter=pydantic_data_converter
    )
    yield env
    await env.shutdown()


class Live:
    def __init__(self, host: str, client: httpx.AsyncClient, db: Database) -> None:
        self.host, self.client, self.db = host, client, db

    @property
    def run_id(self) -> str:
        return settlement_run_id(self.host, LAST.label)

    async def sign_in(self, operator_id: str) -> str:
        """Signs in as a finance account of Shanghai; the session's CSRF token."""
        self.client.cookies.clear()
        token = await operator_token(self.db, operator_id, OperatorRole.FINANCE, ["SH"])
        form = await self.client.get("/console/sign-in")
        answer = await self.client.post("/console/sign-in", data={"token": token, "csrf_token": csrf_of(form.text)})
        assert answer.status_code == 303, answer.text
        return csrf_of((await self.client.get(f"/console/finance/settlements/{self.run_id}")).text)

    async def act(self, action: str, csrf: str, **form: str) -> httpx.Response:
        return await self.client.post(
            f"/console/finance/settlements/{self.run_id}/{action}",
            data={"csrf_token": csrf, **form},
            headers={"HX-Request": "true"},
        )

    async def status(self) -> str:
        async with self.db.sessions() as session:
            run = await session.get(SettlementRun, self.run_id)
        assert run is not None
        return run.status


@pytest.fixture
async def live(temporal_env: WorkflowEnvironment, settings: Settings, db: Database) -> AsyncIterator[Live]:
    settings = settings.updated(settlement={"sandbox_payout_delay_s": 86_400.0, "payout_poll_schedule_s": [60.0]})
    host = f"host-{uuid.uuid4().hex[:8]}"
    app = app_sharing(settings, db, temporal_env.client)
    await host_with_last_months_swaps(db, host, "sandbox")
    providers = {**payout_providers_from_settings(settings, db), PayoutMethod.BANK: BankPayoutProvider(db)}
    async with (
        Worker(
            temporal_env.client,
            task_queue=settings.temporal.task_queue,
            workflows=[SettlementWorkflow],
            activities=SettlementActivities(db, settings, providers).activities(),
        ),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://console") as client,
    ):
        live = Live(host, client, db)
        await settlements.start_settlement(temporal_env.client, settings, db, host, LAST.label, PREPARER)
        try:
            for _ in range(300):  # its first steps are local activities: no workflow time passes
                async with db.sessions() as session:
                    run = await session.get(SettlementRun, live.run_id)
                if run is not None and run.status == RunStatus.AWAITING_APPROVAL:
                    break
                await asyncio.sleep(0.05)
            yield live
        finally:
            handle = temporal_env.client.get_workflow_handle(settlement_workflow_id(host, LAST.label))
            if (await handle.describe()).close_time is None:
                await handle.terminate("test over")


async def test_finance_approves_a_run_through_its_form(live: Live) -> None:
    csrf = await live.sign_in(APPROVER)
    answer = await live.act("approve", csrf)

    assert answer.status_code == 200 and "Approved: the run is approved" in answer.text
    assert 'id="run"' in answer.text and "<html" not in answer.text  # the part that changes
    assert await live.status() in (RunStatus.APPROVED, RunStatus.PAYING)


async def test_a_runs_page_shows_its_workflow_history(live: Live) -> None:
    await live.sign_in(APPROVER)
    page = (await live.client.get(f"/console/finance/settlements/{live.run_id}")).text

    workflow_id = settlement_workflow_id(live.host, LAST.label)
    assert f'aria-label="Workflow history of {workflow_id}"' in page and "open in the Temporal UI" in page
    assert "Workflow history unavailable" not in page


async def test_who_prepared_a_run_is_told_four_eyes_forbid_approving_it(live: Live) -> None:
    csrf = await live.sign_in(PREPARER)
    answer = await live.act("approve", csrf)

    assert answer.status_code == 200 and 'role="alert"' in answer.text and "four eyes" in answer.text
    assert await live.status() == RunStatus.AWAITING_APPROVAL


async def test_finance_rejects_a_run_saying_why(live: Live) -> None:
    csrf = await live.sign_in(APPROVER)
    answer = await live.act("reject", csrf, reason="wrong plan version")

    assert "Rejected: the run is rejected" in answer.text and "wrong plan version" in answer.text
    assert await live.status() == RunStatus.REJECTED
    assert "Recompute" in answer.text
