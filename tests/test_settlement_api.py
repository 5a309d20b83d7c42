"""Settlement runs over the API: finance lists (filtered, a page at a time) and reads runs of its cities,
with their lines, decisions and payouts, and downloads a statement as CSV; a partner reads its own
approved statements only; riders and operators may do neither."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from swapflow.activities.settlement import SettlementActivities
from swapflow.api.app import create_app
from swapflow.db.commissions import (
    CommissionAccrual,
    CommissionPlan,
    CommissionPlanVersion,
    Partner,
    PartnerPayout,
    PlanAssignment,
    SandboxPayout,
    SettlementDecision,
    SettlementLine,
    SettlementRun,
)
from swapflow.db.engine import Database
from swapflow.domain import commissions as domain
from swapflow.domain.clock import utcnow
from swapflow.domain.commissions import AccrualKind, LineKind, StatementLine
from swapflow.domain.ops import OperatorRole
from swapflow.ops.accounts import PARTNER, issue_token
from swapflow.payments.bank_payouts import BankPayoutProvider
from swapflow.payments.payouts import PayoutMethod, PayoutStatus, payout_key
from swapflow.payments.registry import payout_providers_from_settings
from swapflow.payments.sandbox_payouts import SandboxPayoutProvider
from swapflow.services import settlements
from swapflow.services.settlement_statements import STATEMENT_COLUMNS
from swapflow.settings import Settings
from swapflow.workflows.settlement import SettlementWorkflow
from swapflow.workflows.settlement_contract import RunStatus, settlement_run_id, settlement_workflow_id
from tests.api_harness import app_sharing
from tests.conftest import test_server_path as time_skipping_server_path
from tests.ops_harness import bearer, operator_token, rider_token

HOST_SH, AGENT_SH, HOST_BER = "test-host-sh", "test-agent-sh", "test-host-ber"

STATEMENT = (
    StatementLine(
        kind=LineKind.ACCRUALS,
        amount_minor=12_345,
        label="percentage accruals",
        accrual_kind=AccrualKind.PERCENTAGE,
        plan_id="plan-host",
        plan_version=2,
        rate_bp=500,
        swaps=412,
        basis_minor=246_900,
    ),
    StatementLine(
        kind=LineKind.TIER_ADJUSTMENT,
        amount_minor=300,
        label="volume tier at 700 bp",
        plan_id="plan-host",
        plan_version=2,
        rate_bp=200,
        swaps=25,
        basis_minor=15_000,
    ),
    StatementLine(
        kind=LineKind.CLAWBACK,
        amount_minor=-600,
        label="clawback of swap ord-9, refunded",
        accrual_kind=AccrualKind.PERCENTAGE,
        plan_id="plan-host",
        plan_version=1,
        swap_id="ord-9",
        refund_id="refund:ord-9",
    ),
    StatementLine(kind=LineKind.CARRIED_IN, amount_minor=55, label="carried in"),
)
"""A statement of lines of every sort, adding up to 12,100."""


@dataclass
class Run:
    """A settlement run to insert as its workflow records it."""

    partner_id: str
    month: int
    status: RunStatus = RunStatus.AWAITING_APPROVAL
    city_code: str | None = "SH"
    currency: str = "CNY"
    lines: Sequence[StatementLine] = STATEMENT
    decisions: Sequence[tuple[str, str, str]] = ()
    """(decision, by, reason)"""
    payouts: Sequence[tuple[str, str | None, str | None]] = ()
    """(status, provider_ref, failure_reason)"""
    payout_method: str = "sandbox"

    @property
    def label(self) -> str:
        return f"2026-{self.month:02d}"

    @property
    def id(self) -> str:
        return settlement_run_id(self.partner_id, self.label)


async def insert(db: Database, *runs: Run) -> list[str]:
    """The runs with their lines, decisions and payouts; their ids."""
    async with db.transaction() as session:
        for run in runs:
            total = sum(line.amount_minor for line in run.lines)
            session.add(
                SettlementRun(
                    id=run.id,
                    partner_id=run.partner_id,
                    city_code=run.city_code,
                    period_label=run.label,
                    period_start=datetime(2026, run.month, 1, tzinfo=UTC),
                    period_end=datetime(2026, run.month + 1, 1, tzinfo=UTC),
                    currency=run.currency,
                    status=run.status,
                    workflow_id=settlement_workflow_id(run.partner_id, run.label),
                    plan_id="plan-host",
                    plan_version=2,
                    accruals_count=437,
                    carried_in_minor=55,
                    total_minor=total,
                    prepared_by="schedule",
                )
            )
            await session.flush()
            for position, line in enumerate(run.lines, start=1):
                session.add(
                    SettlementLine(
                        run_id=run.id,
                        position=position,
                        kind=line.kind,
                        amount_minor=line.amount_minor,
                        label=line.label,
                        detail=line.model_dump(
                            mode="json", exclude={"kind", "amount_minor", "label"}, exclude_none=True
                        ),
                    )
                )
            for decision, by, reason in run.decisions:
                session.add(SettlementDecision(run_id=run.id, revision=1, decision=decision, by=by, reason=reason))
            for attempt, (status, ref, failure) in enumerate(run.payouts, start=1):
                session.add(
                    PartnerPayout(
                        key=payout_key(run.id, attempt),
                        run_id=run.id,
                        attempt=attempt,
                        partner_id=run.partner_id,
                        method=run.payout_method,
                        amount_minor=total,
                        currency=run.currency,
                        status=status,
                        provider_ref=ref,
                        failure_reason=failure,
                    )
                )
    return [run.id for run in runs]


@pytest.fixture
async def partners(db: Database) -> None:
    async with db.transaction() as session:
        for partner_id, kind, city, zone, currency in (
            (HOST_SH, "station_host", "SH", "Asia/Shanghai", "CNY"),
            (AGENT_SH, "channel_agent", "SH", "Asia/Shanghai", "CNY"),
            (HOST_BER, "station_host", "BER", "Europe/Berlin", "EUR"),
        ):
            session.add(
                Partner(
                    id=partner_id,
                    kind=kind,
                    name=partner_id.upper(),
                    cities=[city],
                    time_zone=zone,
                    currency=currency,
                    payout_method="sandbox",
                    payout_details={"holder": partner_id.upper(), "account_number": f"DE00 {len(partner_id)}"},
                )
            )


@pytest.fixture
def api(settings: Settings, partners: None) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
async def finance(db: Database) -> dict[str, str]:
    """A finance account of every city."""
    return bearer(await operator_token(db, "finance-all", OperatorRole.FINANCE, ["SH", "SZ", "HZ", "BER"]))


@pytest.fixture
async def finance_sh(db: Database) -> dict[str, str]:
    return bearer(await operator_token(db, "finance-sh", OperatorRole.FINANCE, ["SH"]))


async def partner_headers(db: Database, partner_id: str) -> dict[str, str]:
    async with db.transaction() as session:
        return bearer(await issue_token(session, PARTNER, partner_id, "test"))


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


# ---------------------------------------------------------------------------------- listing


async def test_finance_lists_runs_latest_period_first_a_page_at_a_time(
    api: TestClient, db: Database, finance: dict[str, str]
) -> None:
    ids = await insert(db, *(Run(HOST_SH, month) for month in range(1, 6)), Run(AGENT_SH, 5))
    pages, cursor = [], None
    while True:
        page = api.get(
            "/v1/finance/settlements", params={"limit": 2, **({"cursor": cursor} if cursor else {})}, headers=finance
        ).json()
        pages.append([run["id"] for run in page["items"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert pages == [
        [ids[5], ids[4]],  # May: the agent before the host, by id
        [ids[3], ids[2]],
        [ids[1], ids[0]],
    ]


async def test_a_cursor_naming_no_run_of_the_listing_is_a_404_problem(
    api: TestClient, db: Database, finance: dict[str, str]
) -> None:
    [sh_run] = await insert(db, Run(HOST_SH, 1))
    unknown = api.get("/v1/finance/settlements", params={"cursor": "nope"}, headers=finance)
    other_status = api.get("/v1/finance/settlements", params={"cursor": sh_run, "status": "paid"}, headers=finance)
    assert (unknown.status_code, unknown.headers["content-type"]) == (404, "application/problem+json")
    assert other_status.status_code == 404


async def test_finance_filters_runs_by_status_city_partner_and_period(
    api: TestClient, db: Database, finance: dict[str, str]
) -> None:
    paid, waiting, agents, berlin = await insert(
        db,
        Run(HOST_SH, 1, RunStatus.PAID),
        Run(HOST_SH, 2),
        Run(AGENT_SH, 2),
        Run(HOST_BER, 2, city_code="BER", currency="EUR"),
    )

    def listed(**params: str) -> list[str]:
        return sorted(
            run["id"] for run in api.get("/v1/finance/settlements", params=params, headers=finance).json()["items"]
        )

    assert listed(status="paid") == [paid]
    assert listed(status="awaiting_approval", city="SH") == sorted([waiting, agents])
    assert listed(city="BER") == [berlin]
    assert listed(partner=HOST_SH) == sorted([paid, waiting])
    assert listed(period="2026-02", partner=AGENT_SH) == [agents]
    assert api.get("/v1/finance/settlements", params={"status": "lost"}, headers=finance).status_code == 422


# ---------------------------------------------------------------------------------- a run


async def test_a_runs_detail_shows_its_header_decisions_payouts_and_lines_in_order_adding_up_to_its_total(
    api: TestClient, db: Database, finance: dict[str, str]
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
    run = api.get(f"/v1/finance/settlements/{run_id}", headers=finance).json()

    assert (run["partner"]["id"], run["partner"]["name"], run["period_label"], run["status"]) == (
        HOST_SH,
        "TEST-HOST-SH",
        "2026-03",
        "payout_failed",
    )
    assert (run["plan_id"], run["plan_version"], run["prepared_by"], run["workflow_id"]) == (
        "plan-host",
        2,
        "schedule",
        f"settlement/{HOST_SH}/2026-03",
    )
    assert [line["position"] for line in run["lines"]] == [1, 2, 3, 4]
    assert [line["kind"] for line in run["lines"]] == ["accruals", "tier_adjustment", "clawback", "carried_in"]
    assert sum(line["amount_minor"] for line in run["lines"]) == run["total_minor"] == 12_100
    assert run["lines"][2]["detail"] == {
        "accrual_kind": "percentage",
        "plan_id": "plan-host",
        "plan_version": 1,
        "swap_id": "ord-9",
        "refund_id": "refund:ord-9",
    }
    assert [(d["decision"], d["by"], d["reason"]) for d in run["decisions"]] == [
        ("rejected", "finance-a", "wrong plan"),
        ("approved", "finance-b", ""),
    ]
    assert [(p["attempt"], p["status"], p["provider_ref"], p["failure_reason"]) for p in run["payouts"]] == [
        (1, "failed", "po_1", "account closed")
    ]


async def test_an_unknown_run_is_a_404_problem(api: TestClient, finance: dict[str, str]) -> None:
    response = api.get("/v1/finance/settlements/nobody-2026-01", headers=finance)
    assert (response.status_code, response.json()["title"]) == (404, "Unknown settlement run")


async def test_a_runs_statement_csv_has_a_row_per_line_then_the_total_in_minor_and_major_units(
    api: TestClient, db: Database, finance: dict[str, str]
) -> None:
    [run_id] = await insert(db, Run(HOST_SH, 3))
    response = api.get(f"/v1/finance/settlements/{run_id}/statement.csv", headers=finance)

    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert f'filename="statement-{run_id}.csv"' in response.headers["content-disposition"]
    assert response.text.splitlines()[0] == ",".join(STATEMENT_COLUMNS)
    table = rows(response.text)
    assert [(r["position"], r["kind"], r["amount_minor"], r["amount"]) for r in table] == [
        ("1", "accruals", "12345", "123.45"),
        ("2", "tier_adjustment", "300", "3.00"),
        ("3", "clawback", "-600", "-6.00"),
        ("4", "carried_in", "55", "0.55"),
        ("", "total", "12100", "121.00"),
    ]
    assert {(r["run_id"], r["partner_id"], r["period"], r["currency"]) for r in table} == {
        (run_id, HOST_SH, "2026-03", "CNY")
    }
    assert (table[0]["rate_bp"], table[0]["swaps"], table[0]["basis_minor"], table[0]["swap_id"]) == (
        "500",
        "412",
        "246900",
        "",
    )
    assert (table[2]["swap_id"], table[2]["refund_id"]) == ("ord-9", "refund:ord-9")


# ---------------------------------------------------------------------------------- cities


async def test_a_city_scoped_finance_user_lists_only_its_cities_runs(
    api: TestClient, db: Database, finance_sh: dict[str, str]
) -> None:
    sh_run, _ = await insert(db, Run(HOST_SH, 1), Run(HOST_BER, 1, city_code="BER", currency="EUR"))
    assert [run["id"] for run in api.get("/v1/finance/settlements", headers=finance_sh).json()["items"]] == [sh_run]
    assert api.get("/v1/finance/settlements", params={"city": "BER"}, headers=finance_sh).status_code == 403


async def test_another_citys_run_does_not_exist_for_a_city_scoped_finance_user(
    api: TestClient, db: Database, finance_sh: dict[str, str]
) -> None:
    [ber_run] = await insert(db, Run(HOST_BER, 1, city_code="BER", currency="EUR"))
    for path in (f"/v1/finance/settlements/{ber_run}", f"/v1/finance/settlements/{ber_run}/statement.csv"):
        response = api.get(path, headers=finance_sh)
        assert (response.status_code, response.json()["title"]) == (404, "Unknown settlement run"), path
    for action in ("approve", "recompute", "retry-payout"):
        assert api.post(f"/v1/finance/settlements/{ber_run}/{action}", headers=finance_sh).status_code == 404, action


# ---------------------------------------------------------------------------------- the bank


async def test_the_bank_file_holds_the_bank_payouts_waiting_for_the_bank_of_the_callers_cities(
    api: TestClient, db: Database, finance: dict[str, str], finance_sh: dict[str, str]
) -> None:
    waiting = [("awaiting_bank", None, None)]
    sh_run, _, _ = await insert(
        db,
        Run(HOST_SH, 1, RunStatus.PAYING, payout_method="bank", payouts=waiting),
        Run(HOST_BER, 1, RunStatus.PAYING, city_code="BER", currency="EUR", payout_method="bank", payouts=waiting),
        Run(AGENT_SH, 1, RunStatus.PAID, payout_method="bank", payouts=[("succeeded", "bank-ref-1", None)]),
    )

    def file(headers: dict[str, str]) -> list[dict[str, str]]:
        response = api.get("/v1/finance/settlements/bank-file", headers=headers)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
        return rows(response.text)

    assert sorted((r["currency"], r["amount"]) for r in file(finance)) == [("CNY", "121.00"), ("EUR", "121.00")]
    [sh_row] = file(finance_sh)
    assert (sh_row["payment_reference"], sh_row["beneficiary_name"]) == (payout_key(sh_run, 1), "TEST-HOST-SH")


async def test_a_bank_result_is_paid_with_the_banks_reference_or_returned_with_a_reason(
    api: TestClient, finance: dict[str, str]
) -> None:
    path = "/v1/finance/settlements/nobody-2026-01/bank-result"
    for body in ({"outcome": "paid"}, {"outcome": "returned", "reason": ""}, {"outcome": "lost", "reference": "x"}):
        response = api.post(path, json=body, headers=finance)
        assert (response.status_code, response.headers["content-type"]) == (422, "application/problem+json"), body
    assert api.post(path, json={"outcome": "paid", "reference": "BK-1"}, headers=finance).status_code == 404


# ---------------------------------------------------------------------------------- partners


async def test_a_partner_reads_its_own_approved_statements(api: TestClient, db: Database) -> None:
    paid, failed, _draft, _rejected, _other = await insert(
        db,
        Run(HOST_SH, 1, RunStatus.PAID, payouts=[("succeeded", "po_1", None)]),
        Run(HOST_SH, 2, RunStatus.PAYOUT_FAILED, payouts=[("failed", "po_2", "account closed")]),
        Run(HOST_SH, 3),
        Run(HOST_SH, 4, RunStatus.REJECTED),
        Run(AGENT_SH, 1, RunStatus.PAID),
    )
    host = await partner_headers(db, HOST_SH)

    listed = api.get("/v1/partner/statements", headers=host).json()
    assert ([s["id"] for s in listed["items"]], listed["next_cursor"]) == ([failed, paid], None)
    statement = api.get(f"/v1/partner/statements/{paid}", headers=host).json()
    assert sum(line["amount_minor"] for line in statement["lines"]) == statement["total_minor"] == 12_100
    assert [(p["status"], p["provider_ref"]) for p in statement["payouts"]] == [("succeeded", "po_1")]
    assert "decisions" not in statement and "prepared_by" not in statement
    csv_rows = rows(api.get(f"/v1/partner/statements/{paid}/statement.csv", headers=host).text)
    assert csv_rows[-1]["kind"] == "total" and csv_rows[-1]["amount_minor"] == "12100"


async def test_another_partners_statement_and_a_statement_not_yet_approved_do_not_exist_for_a_partner(
    api: TestClient, db: Database
) -> None:
    others, draft = await insert(db, Run(AGENT_SH, 1, RunStatus.PAID), Run(HOST_SH, 2))
    host = await partner_headers(db, HOST_SH)
    for run_id in (others, draft):
        for path in (f"/v1/partner/statements/{run_id}", f"/v1/partner/statements/{run_id}/statement.csv"):
            response = api.get(path, headers=host)
            assert (response.status_code, response.json()["title"]) == (404, "Unknown settlement run"), path


# ---------------------------------------------------------------------------------- who may call


async def test_riders_operators_and_partners_may_not_read_finances_runs(api: TestClient, db: Database) -> None:
    [run_id] = await insert(db, Run(HOST_SH, 1))
    callers = {
        "rider": bearer(await rider_token(db, "rider-sh-0001")),
        "operator": bearer(await operator_token(db, "ops-sh", OperatorRole.OPERATOR, ["SH"])),
        "city lead": bearer(await operator_token(db, "lead-sh", OperatorRole.CITY_LEAD, ["SH"])),
        "partner": await partner_headers(db, HOST_SH),
    }
    for who, headers in callers.items():
        for path in ("/v1/finance/settlements", f"/v1/finance/settlements/{run_id}"):
            assert api.get(path, headers=headers).status_code == 403, (who, path)
        assert api.post(f"/v1/finance/settlements/{run_id}/approve", headers=headers).status_code == 403, who


async def test_only_partner_accounts_read_partner_statements(api: TestClient, db: Database) -> None:
    for who, headers in {
        "rider": bearer(await rider_token(db, "rider-sh-0001")),
        "operator": bearer(await operator_token(db, "ops-sh", OperatorRole.OPERATOR, ["SH"])),
        "finance": bearer(await operator_token(db, "finance-sh", OperatorRole.FINANCE, ["SH"])),
        "admin": bearer(await operator_token(db, "admin", OperatorRole.ADMIN)),
    }.items():
        assert api.get("/v1/partner/statements", headers=headers).status_code == 403, who
    assert api.get("/v1/partner/statements", headers={"Authorization": ""}).status_code == 401


# ---------------------------------------------------------------------------------- acting on a run
# On the time-skipping server with the real worker: a station host's accruals of last month (Shanghai
# time), its run started by PREPARER under a plan prepared by PLANNER, paid through the sandbox payout
# provider, whose payouts the tests end as a bank would (`settle_payout`). Each test's host is new: the
# module's server never starts a finished run's workflow again.

SHANGHAI = ZoneInfo("Asia/Shanghai")
MONTHLY = domain.Cadence(kind=domain.CadenceKind.MONTHLY)
LAST = domain.previous_period(domain.period_containing(utcnow(), MONTHLY, SHANGHAI), MONTHLY, SHANGHAI)
PREPARER, PLANNER, APPROVER = "fin-preparer", "planner", "fin-approver"
SWAPS, NET = 4, 600  # at 5 %: 30 each


@pytest.fixture(scope="module")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of this module's own: these tests skip workflow time, which runs other
    tests leave waiting (their workers gone) would hold back on the shared one."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=time_skipping_server_path(), data_converter=pydantic_data_converter
    )
    yield env
    await env.shutdown()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """A sandbox payout stays processing until the test ends it; the run looks every minute."""
    return settings.updated(settlement={"sandbox_payout_delay_s": 86_400.0, "payout_poll_schedule_s": [60.0]})


@dataclass
class Live:
    """The API with a worker, finance's accounts, and the host whose run the test acts on."""

    host: str
    env: WorkflowEnvironment
    api: httpx.AsyncClient
    db: Database
    approver: dict[str, str]
    preparer: dict[str, str]

    @property
    def run_id(self) -> str:
        return settlement_run_id(self.host, LAST.label)

    async def run(self) -> dict[str, Any]:
        """The run as finance reads it (a problem document while it is not recorded yet)."""
        response = await self.api.get(f"/v1/finance/settlements/{self.run_id}", headers=self.approver)
        return dict(response.json())

    async def act(self, action: str, headers: dict[str, str] | None = None, **body: str) -> httpx.Response:
        return await self.api.post(
            f"/v1/finance/settlements/{self.run_id}/{action}", json=body or None, headers=headers or self.approver
        )

    async def until(self, status: str, payout: str | None = None) -> dict[str, Any]:
        """The run once it is `status` (and its latest payout `payout`), skipping a minute of workflow time
        between looks."""
        for _ in range(200):
            run = await self.run()
            latest = run.get("payouts") or [{}]
            if run.get("status") == status and payout in (None, latest[-1].get("status")):
                return run
            await asyncio.sleep(0.05)
            await self.env.sleep(60)
        raise AssertionError(f"run {self.run_id} never became {status} (payout {payout}): {run}")

    async def bank_ends(self, attempt: int, status: PayoutStatus, reason: str | None = None) -> None:
        """The sandbox ends the run's `attempt`th payout as a bank would."""
        await SandboxPayoutProvider(self.db).settle_payout(payout_key(self.run_id, attempt), status, reason)


async def host_with_last_months_swaps(db: Database, host_id: str, payout_method: str) -> None:
    """`host_id` on a monthly 5 % plan prepared by PLANNER, with SWAPS swaps accrued last month."""
    plan = domain.PlanVersion(
        plan_id=f"plan-{host_id}",
        version=1,
        effective_from=datetime(2020, 1, 1, tzinfo=UTC),
        currency="CNY",
        percent_bp=500,
    )
    host = domain.Partner(id=host_id, kind=domain.PartnerKind.STATION_HOST)
    accruals = [
        accrual
        for n in range(SWAPS)
        for accrual in domain.accrue(
            domain.CompletedSwap(
                id=f"ord-{host_id}-{n}",
                completed_at=LAST.start + timedelta(days=n + 1),
                net_revenue_minor=NET,
                currency="CNY",
            ),
            host=host,
            franchisee=None,
            agents=(),
            plans={host_id: [plan]},
        )
    ]
    async with db.transaction() as session:
        session.add(
            Partner(
                id=host_id,
                kind=host.kind,
                name="Live Host",
                cities=["SH"],
                time_zone="Asia/Shanghai",
                currency="CNY",
                payout_method=payout_method,
                payout_account="acct-live",
                payout_details={"holder": "Live Host", "account_number": "6222 0202 0000 1234 567"},
            )
        )
        session.add(CommissionPlan(id=plan.plan_id, name=host_id, cadence="monthly", created_by=PLANNER))
        await session.flush()
        session.add(
            CommissionPlanVersion(
                plan_id=plan.plan_id,
                version=plan.version,
                effective_from=plan.effective_from,
                currency=plan.currency,
                percent_bp=plan.percent_bp,
                created_by=PLANNER,
            )
        )
        session.add(
            PlanAssignment(
                partner_id=host_id, plan_id=plan.plan_id, effective_from=plan.effective_from, assigned_by="admin"
            )
        )
        session.add_all(
            CommissionAccrual(
                key=f"swap:{a.swap_id}:{a.partner_id}:{a.kind}",
                order_id=a.swap_id,
                partner_id=a.partner_id,
                role=a.role,
                kind=a.kind,
                amount_minor=a.amount_minor,
                currency=a.currency,
                plan_id=a.plan_id,
                plan_version=a.plan_version,
                basis_minor=a.basis_minor,
                rate_bp=a.rate_bp,
                at=a.at,
            )
            for a in accruals
        )


@pytest.fixture
def payout_method() -> str:
    """How the host is paid (a test parametrizes it)."""
    return "sandbox"


@pytest.fixture
async def live(
    temporal_env: WorkflowEnvironment, settings: Settings, db: Database, payout_method: str
) -> AsyncIterator[Live]:
    """A new host's run of last month awaiting approval, the API in this test's event loop and a worker
    of the settlement workflows with their real activities, paying through the sandbox and the bank file."""
    host = f"host-{uuid.uuid4().hex[:8]}"
    app = app_sharing(settings, db, temporal_env.client)
    await host_with_last_months_swaps(db, host, payout_method)
    providers = {**payout_providers_from_settings(settings, db), PayoutMethod.BANK: BankPayoutProvider(db)}
    async with (
        Worker(
            temporal_env.client,
            task_queue=settings.temporal.task_queue,
            workflows=[SettlementWorkflow],
            activities=SettlementActivities(db, settings, providers).activities(),
        ),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client,
    ):
        live = Live(
            host,
            temporal_env,
            client,
            db,
            approver=bearer(await operator_token(db, APPROVER, OperatorRole.FINANCE, ["SH"])),
            preparer=bearer(await operator_token(db, PREPARER, OperatorRole.FINANCE, ["SH"])),
        )
        await settlements.start_settlement(temporal_env.client, settings, db, host, LAST.label, PREPARER)
        try:
            await live.until("awaiting_approval")
            yield live
        finally:  # a run left waiting for finance would hold the module's clock back once its worker is gone
            handle = temporal_env.client.get_workflow_handle(settlement_workflow_id(host, LAST.label))
            if (await handle.describe()).close_time is None:
                await handle.terminate("test over")


async def test_an_approved_run_is_paid_and_its_partner_reads_the_statement(live: Live) -> None:
    approved = await live.act("approve")
    assert approved.status_code == 200, approved.json()
    assert (approved.json()["status"], approved.json()["workflow_id"]) == (
        "approved",
        f"settlement/{live.host}/{LAST.label}",
    )
    await live.until("paying", payout="processing")
    await live.bank_ends(1, PayoutStatus.SUCCEEDED)
    run = await live.until("paid")

    assert run["total_minor"] == sum(line["amount_minor"] for line in run["lines"]) == SWAPS * 30
    assert [(d["decision"], d["by"]) for d in run["decisions"]] == [("approved", APPROVER)]
    assert [(p["attempt"], p["status"], p["amount_minor"]) for p in run["payouts"]] == [(1, "succeeded", SWAPS * 30)]
    statement = await live.api.get(
        f"/v1/partner/statements/{live.run_id}", headers=await partner_headers(live.db, live.host)
    )
    assert (statement.json()["status"], statement.json()["total_minor"]) == ("paid", SWAPS * 30)


async def test_who_prepared_a_run_may_not_approve_it(live: Live) -> None:
    refused = await live.act("approve", live.preparer)

    assert (refused.status_code, refused.headers["content-type"]) == (403, "application/problem+json")
    assert refused.json()["title"] == "Forbidden" and "four eyes" in refused.json()["detail"]
    assert (await live.run())["status"] == "awaiting_approval"


async def test_a_rejected_run_is_recomputed_as_its_next_revision(live: Live) -> None:
    assert (await live.act("reject")).status_code == 422  # a rejection says why
    rejected = await live.act("reject", reason="wrong plan version")
    assert (rejected.status_code, rejected.json()["status"]) == (200, "rejected")
    too_soon = await live.act("approve")
    assert (too_soon.status_code, too_soon.json()["title"]) == (409, "Not possible now")

    recomputed = await live.act("recompute")
    assert (recomputed.status_code, recomputed.json()["status"], recomputed.json()["revision"]) == (
        200,
        "awaiting_approval",
        2,
    )
    run = await live.run()
    assert [(d["decision"], d["by"], d["reason"], d["revision"]) for d in run["decisions"]] == [
        ("rejected", APPROVER, "wrong plan version", 1)
    ]
    assert run["revision"] == 2 and sum(line["amount_minor"] for line in run["lines"]) == run["total_minor"]


async def test_a_failed_payout_is_retried_and_the_run_paid_once(live: Live) -> None:
    await live.act("approve")
    await live.until("paying", payout="processing")
    assert (await live.act("retry-payout")).status_code == 409  # nothing failed yet
    await live.bank_ends(1, PayoutStatus.FAILED, "account closed")
    failed = await live.until("payout_failed")
    assert failed["failure_reason"] == "account closed"
    assert [(p["attempt"], p["status"], p["failure_reason"]) for p in failed["payouts"]] == [
        (1, "failed", "account closed")
    ]

    retried = await live.act("retry-payout")
    assert retried.status_code == 200, retried.json()
    await live.until("paying", payout="processing")
    await live.bank_ends(2, PayoutStatus.SUCCEEDED)
    run = await live.until("paid")

    assert [(p["attempt"], p["status"]) for p in run["payouts"]] == [(1, "failed"), (2, "succeeded")]
    async with live.db.sessions() as session:
        landed = await session.scalar(
            select(func.count()).select_from(SandboxPayout).where(SandboxPayout.status == PayoutStatus.SUCCEEDED)
        )
    assert landed == 1


@pytest.mark.parametrize("payout_method", ["bank"])
async def test_a_bank_transfer_goes_in_the_bank_file_and_finance_marks_it_paid(live: Live) -> None:
    await live.act("approve")
    paying = await live.until("paying", payout="awaiting_bank")
    assert [p["method"] for p in paying["payouts"]] == ["bank"]
    bank_file = rows((await live.api.get("/v1/finance/settlements/bank-file", headers=live.approver)).text)
    assert [(r["payment_reference"], r["beneficiary_account"], r["amount"]) for r in bank_file] == [
        (payout_key(live.run_id, 1), "6222020200001234567", "1.20")
    ]

    marked = await live.act("bank-result", outcome="paid", reference="BK-20261207-0042")
    assert marked.status_code == 200, marked.json()
    run = await live.until("paid")

    assert [(p["status"], p["provider_ref"], p["paid_by"]) for p in run["payouts"]] == [
        ("succeeded", "BK-20261207-0042", APPROVER)
    ]
    assert (await live.api.get("/v1/finance/settlements/bank-file", headers=live.approver)).text.count("\n") == 1


@pytest.mark.parametrize("payout_method", ["bank"])
async def test_a_returned_bank_transfer_leaves_the_run_owed_for_a_retry(live: Live) -> None:
    await live.act("approve")
    await live.until("paying", payout="awaiting_bank")
    returned = await live.act("bank-result", outcome="returned", reason="account number unknown")
    assert returned.status_code == 200, returned.json()
    run = await live.until("payout_failed")

    assert [(p["status"], p["failure_reason"]) for p in run["payouts"]] == [
        ("returned", "returned by the bank: account number unknown")
    ]
    assert (await live.act("retry-payout")).status_code == 200
