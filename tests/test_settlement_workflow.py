"""A partner's period settles as workflow `settlement/<partner>/<period>` on the time-skipping server, with
the real activities and database: frozen, computed, approved by someone else than who prepared it,
paid once through the sandbox payout provider and booked so the ledger says what is still owed.

The partners' accruals are inserted as a completed swap books them (computed by the domain's `accrue`,
with their ledger postings); the months are the last ones over, in Shanghai time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, insert, select, update
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from swapflow.activities.settlement import SettlementActivities, adjustments_key
from swapflow.cli import main
from swapflow.db.audit import AuditEvent
from swapflow.db.commissions import (
    CommissionAccrual,
    CommissionClawback,
    CommissionPlan,
    CommissionPlanVersion,
    Partner,
    PartnerPayout,
    PlanAssignment,
    SandboxPayout,
    SettlementLine,
    SettlementRun,
)
from swapflow.db.engine import Database
from swapflow.db.money import LedgerPosting, LedgerTransaction
from swapflow.db.ops import Alert
from swapflow.domain import commissions as domain
from swapflow.domain.clock import utcnow
from swapflow.domain.errors import Conflict, Forbidden, Invalid
from swapflow.domain.ops import AlertStatus
from swapflow.ops.alerts import SETTLEMENT_PAYOUT_FAILED, SETTLEMENT_UNAPPROVED
from swapflow.payments.bank_payouts import BankPayoutProvider
from swapflow.payments.ledger import (
    BANK_CASH,
    COMMISSION_EXPENSE,
    Posting,
    partner_payable,
    post_transaction,
    provider_clearing,
)
from swapflow.payments.payouts import PayoutMethod, PayoutRequest, PayoutStatus, ProviderPayout, payout_key
from swapflow.payments.provider import ProviderTimeout
from swapflow.payments.sandbox_payouts import SandboxPayoutProvider
from swapflow.services import settlements
from swapflow.settings import Settings, get_settings
from swapflow.workflows.settlement import SettlementsDueWorkflow, SettlementWorkflow
from swapflow.workflows.settlement_contract import (
    BankResult,
    DueRequest,
    DueResult,
    RunStatus,
    SettlementActor,
    SettlementDecision,
    SettlementState,
    settlement_run_id,
    settlement_workflow_id,
)
from tests.conftest import test_server_path as time_skipping_server_path
from tests.history_recording import RecordHistory

SHANGHAI = ZoneInfo("Asia/Shanghai")
MONTHLY = domain.Cadence(kind=domain.CadenceKind.MONTHLY)
LAST = domain.previous_period(domain.period_containing(utcnow(), MONTHLY, SHANGHAI), MONTHLY, SHANGHAI)
BEFORE = domain.previous_period(LAST, MONTHLY, SHANGHAI)
NET = 600  # a swap's net revenue, CNY minor units
REMIND_AFTER_S = 6 * 3600.0
PREPARER, PLANNER, APPROVER = "fin-preparer", "planner", "fin-approver"


@pytest.fixture(scope="module")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of this module's own: these tests skip hours, and workflows other tests leave
    behind on the shared server (their workers gone) would hold its clock back."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=time_skipping_server_path(), data_converter=pydantic_data_converter
    )
    yield env
    await env.shutdown()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.updated(
        settlement={"remind_after_s": REMIND_AFTER_S, "payout_poll_schedule_s": [60.0, 300.0, 3600.0]}
    )


class LosesAnswers(SandboxPayoutProvider):
    """The sandbox, whose first answer to a payout is lost after the payout was made."""

    lost = 0

    async def pay(self, request: PayoutRequest) -> ProviderPayout:
        payout = await super().pay(request)
        if not self.lost:
            self.lost += 1
            raise ProviderTimeout(f"no answer for {request.key}")
        return payout


class Finance:
    """The test's side of a run: the client, the database, the sandbox payout provider."""

    def __init__(self, env: WorkflowEnvironment, settings: Settings, db: Database, sandbox: SandboxPayoutProvider):
        self.env, self.client, self.settings, self.db, self.sandbox = env, env.client, settings, db, sandbox
        self.started: list[str] = []

    async def start(self, partner_id: str, period: domain.SettlementPeriod, by: str = PREPARER) -> SettlementState:
        self.started.append(settlement_workflow_id(partner_id, period.label))
        return await settlements.start_settlement(self.client, self.settings, self.db, partner_id, period.label, by)

    def handle(self, partner_id: str, period: domain.SettlementPeriod) -> WorkflowHandle[Any, SettlementState]:
        return self.client.get_workflow_handle_for(
            SettlementWorkflow.run, settlement_workflow_id(partner_id, period.label)
        )

    async def result(self, partner_id: str, period: domain.SettlementPeriod) -> SettlementState:
        """The run's end; workflow time skips while it waits (as it does for a handle the test started)."""
        async with self.env.time_skipping_unlocked():  # type: ignore[attr-defined]
            return await self.handle(partner_id, period).result()

    async def approve(self, partner_id: str, period: domain.SettlementPeriod, by: str = APPROVER) -> SettlementState:
        decision = SettlementDecision(by=by, approve=True)
        return await settlements.decide(self.client, settlement_workflow_id(partner_id, period.label), decision)

    async def until(
        self, partner_id: str, period: domain.SettlementPeriod, done: Callable[[SettlementState], bool], skip_s: float
    ) -> SettlementState:
        """Until the run's state is `done`, skipping `skip_s` of workflow time between looks."""
        handle = self.handle(partner_id, period)
        for _ in range(300):
            state = await handle.query(SettlementWorkflow.state)
            if done(state):
                return state
            await asyncio.sleep(0.05)
            await self.env.sleep(skip_s)
        raise AssertionError(f"run {partner_id} {period.label} stayed {state}")


@pytest.fixture
def sandbox(db: Database) -> SandboxPayoutProvider:
    return SandboxPayoutProvider(db)


@pytest.fixture
async def finance(
    temporal_env: WorkflowEnvironment, settings: Settings, db: Database, sandbox: SandboxPayoutProvider
) -> AsyncIterator[Finance]:
    providers = {PayoutMethod.SANDBOX: sandbox, PayoutMethod.BANK: BankPayoutProvider(db)}
    activities = SettlementActivities(db, settings, providers)
    finance = Finance(temporal_env, settings, db, sandbox)
    async with Worker(
        temporal_env.client,
        task_queue=settings.temporal.task_queue,
        workflows=[SettlementWorkflow, SettlementsDueWorkflow],
        activities=activities.activities(),
    ):
        yield finance
        await end_runs(temporal_env.client, finance.started)


async def end_runs(client: Client, workflow_ids: Sequence[str]) -> None:
    """Runs left waiting for finance would hold the module's clock back once their worker is gone."""
    for workflow_id in workflow_ids:
        handle = client.get_workflow_handle(workflow_id)
        try:
            if (await handle.describe()).close_time is None:
                await handle.terminate("test over")
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:  # never started
                raise


# ---------------------------------------------------------------------------------- the partner's side


async def station_host(
    db: Database,
    partner_id: str,
    *,
    percent_bp: int = 500,
    tiers: Sequence[domain.Tier] = (),
    minimum_payout_minor: int = 0,
    method: str = "sandbox",
) -> domain.PlanVersion:
    """A station host on a monthly plan of its own (prepared by PLANNER), from the start of the year."""
    plan = domain.PlanVersion(
        plan_id=f"plan-{partner_id}",
        version=1,
        effective_from=datetime(2020, 1, 1, tzinfo=UTC),
        currency="CNY",
        percent_bp=percent_bp,
        tiers=tuple(tiers),
        minimum_payout_minor=minimum_payout_minor,
    )
    async with db.transaction() as session:
        session.add(
            Partner(
                id=partner_id,
                kind=domain.PartnerKind.STATION_HOST,
                name=partner_id,
                cities=["SH"],
                time_zone="Asia/Shanghai",
                currency="CNY",
                payout_method=method,
                payout_account=f"acct-{partner_id}",
                payout_details={"holder": partner_id, "account_number": "6222020200112233445", "bank": "ICBC"},
            )
        )
        session.add(CommissionPlan(id=plan.plan_id, name=plan.plan_id, cadence="monthly", created_by=PLANNER))
        await session.flush()
        session.add(version_row(plan, PLANNER))
        session.add(
            PlanAssignment(
                partner_id=partner_id, plan_id=plan.plan_id, effective_from=plan.effective_from, assigned_by="admin"
            )
        )
    return plan


def version_row(plan: domain.PlanVersion, created_by: str) -> CommissionPlanVersion:
    return CommissionPlanVersion(
        plan_id=plan.plan_id,
        version=plan.version,
        effective_from=plan.effective_from,
        currency=plan.currency,
        percent_bp=plan.percent_bp,
        fixed_minor=plan.fixed_minor,
        tiers=[tier.model_dump() for tier in plan.tiers],
        overrides_bp=list(plan.overrides_bp),
        cap_minor=plan.cap_minor,
        minimum_payout_minor=plan.minimum_payout_minor,
        created_by=created_by,
    )


async def swaps_at_host(
    db: Database, partner_id: str, plan: domain.PlanVersion, period: domain.Period, count: int
) -> list[domain.Accrual]:
    """`count` swaps completed at the host's station in the period, accrued as a completed swap books them."""
    host = domain.Partner(id=partner_id, kind=domain.PartnerKind.STATION_HOST)
    accruals = []
    for n in range(count):
        swap = domain.CompletedSwap(
            id=f"{partner_id}-{period.start:%Y%m}-{n}",
            completed_at=period.start + timedelta(hours=n + 1),
            net_revenue_minor=NET,
            currency="CNY",
        )
        accruals += domain.accrue(swap, host=host, franchisee=None, agents=(), plans={partner_id: [plan]})
    async with db.transaction() as session:
        await session.execute(
            insert(CommissionAccrual),
            [
                {
                    "key": f"swap:{a.swap_id}:{a.partner_id}:{a.kind}",
                    "order_id": a.swap_id,
                    "partner_id": a.partner_id,
                    "role": a.role,
                    "kind": a.kind,
                    "level": a.level,
                    "amount_minor": a.amount_minor,
                    "currency": a.currency,
                    "plan_id": a.plan_id,
                    "plan_version": a.plan_version,
                    "basis_minor": a.basis_minor,
                    "rate_bp": a.rate_bp,
                    "at": a.at,
                }
                for a in accruals
            ],
        )
        for a in accruals:
            await post_transaction(
                session,
                key=f"swap:{a.swap_id}:commissions",
                kind="commission_accrual",
                currency="CNY",
                postings=[
                    Posting(COMMISSION_EXPENSE, a.amount_minor),
                    Posting(partner_payable(partner_id), -a.amount_minor),
                ],
                order_id=a.swap_id,
            )
    return accruals


async def refunded_after_settlement(db: Database, partner_id: str, order_id: str, refund_id: str) -> int:
    """The swap is refunded once its accrual was settled: reversed, and a clawback waits for the next run
    (as the refund books it). Returns the accrual's amount."""
    async with db.transaction() as session:
        accrual = await session.scalar(select(CommissionAccrual).where(CommissionAccrual.order_id == order_id))
        assert accrual is not None and accrual.run_id is not None
        accrual.reversed_by_refund_id, accrual.reversed_at = refund_id, utcnow()
        session.add(
            CommissionClawback(
                accrual_id=accrual.id,
                refund_id=refund_id,
                partner_id=partner_id,
                amount_minor=accrual.amount_minor,
                currency=accrual.currency,
            )
        )
        await post_transaction(
            session,
            key=f"refund:{refund_id}:commissions",
            kind="commission_reversal",
            currency="CNY",
            postings=[
                Posting(partner_payable(partner_id), accrual.amount_minor),
                Posting(COMMISSION_EXPENSE, -accrual.amount_minor),
            ],
        )
        return accrual.amount_minor


async def balance(db: Database, account: str) -> int:
    async with db.sessions() as session:
        total = await session.scalar(
            select(func.coalesce(func.sum(LedgerPosting.amount_minor), 0)).where(LedgerPosting.account == account)
        )
    return int(total or 0)


async def lines_of(db: Database, run_id: str) -> list[SettlementLine]:
    async with db.sessions() as session:
        rows = await session.scalars(
            select(SettlementLine).where(SettlementLine.run_id == run_id).order_by(SettlementLine.position)
        )
        return list(rows)


async def payouts_of(db: Database, run_id: str) -> list[PartnerPayout]:
    async with db.sessions() as session:
        rows = await session.scalars(
            select(PartnerPayout).where(PartnerPayout.run_id == run_id).order_by(PartnerPayout.attempt)
        )
        return list(rows)


async def ledger_keys(db: Database, prefix: str) -> list[str]:
    async with db.sessions() as session:
        keys = await session.scalars(
            select(LedgerTransaction.key).where(LedgerTransaction.key.startswith(prefix)).order_by(LedgerTransaction.id)
        )
        return list(keys)


async def alerts(db: Database, kind: str, run_id: str) -> list[Alert]:
    async with db.sessions() as session:
        rows = await session.scalars(select(Alert).where(Alert.kind == kind, Alert.dedupe_key == f"{kind}:{run_id}"))
        return list(rows)


TIERED = (domain.Tier(above_swaps=20, percent_bp=700),)


# ---------------------------------------------------------------------------------- tests


@pytest.mark.records_history
async def test_a_month_of_swaps_settles_approved_and_paid_and_the_ledger_agrees_with_the_statement(
    finance: Finance, db: Database, record_history: RecordHistory
) -> None:
    plan = await station_host(db, "host-paid", tiers=TIERED)
    accruals = await swaps_at_host(db, "host-paid", plan, LAST, 30)
    expected = domain.statement("host-paid", LAST, currency="CNY", accruals=accruals, plans=[plan])
    run_id = settlement_run_id("host-paid", LAST.label)

    await finance.start("host-paid", LAST)
    computed = await finance.until("host-paid", LAST, lambda s: s.status != RunStatus.COMPUTING, 0)
    assert (computed.status, computed.revision, computed.total_minor) == (
        RunStatus.AWAITING_APPROVAL,
        1,
        expected.total_minor,
    )
    assert computed.plan_edited_by == (PLANNER,)
    approved = await finance.approve("host-paid", LAST)
    assert approved.status == RunStatus.APPROVED
    paid = await finance.result("host-paid", LAST)

    assert (paid.status, paid.payout_status, paid.payout_attempt) == (RunStatus.PAID, PayoutStatus.SUCCEEDED, 1)
    lines = await lines_of(db, run_id)
    assert [(line.kind, line.amount_minor) for line in lines] == [
        (line.kind, line.amount_minor) for line in expected.lines
    ]
    assert sum(line.amount_minor for line in lines) == expected.total_minor == 30 * 30 + 10 * 12  # 5 %, then 7 %
    assert await balance(db, partner_payable("host-paid")) == 0  # accrued + tier adjustment, all paid
    assert await balance(db, provider_clearing("sandbox")) == -expected.total_minor
    assert await ledger_keys(db, f"settlement:{run_id}:") == [
        adjustments_key(run_id, 1),
        f"{payout_key(run_id, 1)}:paid",
    ]
    async with db.sessions() as session:
        run = await session.get(SettlementRun, run_id)
        frozen = await session.scalar(select(func.count()).where(CommissionAccrual.run_id == run_id))
        sandbox_paid = await session.scalar(select(func.count()).select_from(SandboxPayout))
    assert run is not None and (run.status, run.approved_by, run.accruals_count) == ("paid", APPROVER, 30)
    assert frozen == 30 and sandbox_paid == 1
    await record_history(settlement_workflow_id("host-paid", LAST.label), "settlement_paid")


@pytest.mark.records_history
async def test_a_rejected_run_is_recomputed_after_a_corrected_plan_version(
    finance: Finance, db: Database, record_history: RecordHistory
) -> None:
    plan = await station_host(db, "host-rejected", tiers=TIERED)
    await swaps_at_host(db, "host-rejected", plan, LAST, 30)
    run_id = settlement_run_id("host-rejected", LAST.label)
    await finance.start("host-rejected", LAST)
    await finance.until("host-rejected", LAST, lambda s: s.status == RunStatus.AWAITING_APPROVAL, 0)
    workflow_id = settlement_workflow_id("host-rejected", LAST.label)

    rejected = await settlements.decide(
        finance.client, workflow_id, SettlementDecision(by=APPROVER, approve=False, reason="the cap was left out")
    )
    assert (rejected.status, rejected.failure_reason) == (RunStatus.REJECTED, "the cap was left out")
    corrected = plan.model_copy(update={"version": 2, "cap_minor": 800, "effective_from": LAST.start})
    async with db.transaction() as session:
        session.add(version_row(corrected, "planner-2"))
    recomputed = await settlements.recompute(finance.client, workflow_id, SettlementActor(by=PREPARER))

    assert (recomputed.status, recomputed.revision, recomputed.total_minor) == (RunStatus.AWAITING_APPROVAL, 2, 800)
    assert recomputed.plan_edited_by == (PLANNER, "planner-2")  # v1 accrued the swaps, v2's cap applies
    assert [line.kind for line in await lines_of(db, run_id)] == ["accruals", "tier_adjustment", "cap"]
    assert await ledger_keys(db, f"settlement:{run_id}:adjustments") == [
        adjustments_key(run_id, 1),
        f"{adjustments_key(run_id, 1)}:reversal",
        adjustments_key(run_id, 2),
    ]
    await finance.approve("host-rejected", LAST)
    assert (await finance.result("host-rejected", LAST)).status == RunStatus.PAID
    assert await balance(db, partner_payable("host-rejected")) == 0
    async with db.sessions() as session:
        actions = await session.scalars(
            select(AuditEvent.action).where(AuditEvent.entity_id == run_id).order_by(AuditEvent.id)
        )
        assert list(actions) == ["settlement.reject", "settlement.recompute", "settlement.approve"]
    await record_history(workflow_id, "settlement_rejected_then_recomputed")


async def test_who_prepared_the_run_or_its_plan_may_not_approve_it(finance: Finance, db: Database) -> None:
    plan = await station_host(db, "host-four-eyes")
    await swaps_at_host(db, "host-four-eyes", plan, LAST, 5)
    await finance.start("host-four-eyes", LAST, by=PREPARER)
    await finance.until("host-four-eyes", LAST, lambda s: s.status == RunStatus.AWAITING_APPROVAL, 0)

    for who in (PREPARER, PLANNER):
        with pytest.raises(Forbidden, match="four eyes"):
            await finance.approve("host-four-eyes", LAST, by=who)
    assert (await finance.handle("host-four-eyes", LAST).query(SettlementWorkflow.state)).status == (
        RunStatus.AWAITING_APPROVAL
    )
    assert (await finance.approve("host-four-eyes", LAST, by=APPROVER)).status == RunStatus.APPROVED
    assert (await finance.result("host-four-eyes", LAST)).status == RunStatus.PAID


async def test_an_action_the_run_is_not_waiting_for_is_a_conflict(finance: Finance, db: Database) -> None:
    plan = await station_host(db, "host-conflict")
    await swaps_at_host(db, "host-conflict", plan, LAST, 5)
    await finance.start("host-conflict", LAST)
    await finance.until("host-conflict", LAST, lambda s: s.status == RunStatus.AWAITING_APPROVAL, 0)
    workflow_id = settlement_workflow_id("host-conflict", LAST.label)

    with pytest.raises(Conflict, match="awaiting_approval, not payout_failed"):
        await settlements.retry_payout(finance.client, workflow_id, SettlementActor(by=APPROVER))
    with pytest.raises(Conflict):
        await settlements.recompute(finance.client, workflow_id, SettlementActor(by=APPROVER))
    with pytest.raises(Invalid, match="reason"):
        await settlements.decide(finance.client, workflow_id, SettlementDecision(by=APPROVER, approve=False))


async def test_an_action_on_a_run_that_has_ended_is_a_conflict(finance: Finance, db: Database) -> None:
    await station_host(db, "host-nothing")  # accrued nothing: nothing due, the run ends at once
    await finance.start("host-nothing", LAST)
    assert (await finance.result("host-nothing", LAST)).status == RunStatus.NOTHING_DUE

    with pytest.raises(Conflict, match="has ended: it is nothing_due"):
        await finance.approve("host-nothing", LAST)


@pytest.mark.records_history
async def test_a_failed_payout_is_still_owed_and_paid_once_when_finance_retries(
    finance: Finance, db: Database, sandbox: SandboxPayoutProvider, record_history: RecordHistory
) -> None:
    sandbox.delay_s = 10 * 86400.0  # processing until the test ends it, as the bank does
    plan = await station_host(db, "host-retry")
    accruals = await swaps_at_host(db, "host-retry", plan, LAST, 10)
    total = sum(a.amount_minor for a in accruals)
    run_id = settlement_run_id("host-retry", LAST.label)
    await finance.start("host-retry", LAST)
    await finance.until("host-retry", LAST, lambda s: s.status == RunStatus.AWAITING_APPROVAL, 0)
    await finance.approve("host-retry", LAST)
    await finance.until("host-retry", LAST, lambda s: s.payout_status == PayoutStatus.PROCESSING, 0)

    await sandbox.settle_payout(payout_key(run_id, 1), PayoutStatus.FAILED, "account frozen")
    failed = await finance.until("host-retry", LAST, lambda s: s.status == RunStatus.PAYOUT_FAILED, 300)
    assert failed.failure_reason == "account frozen"
    assert await balance(db, partner_payable("host-retry")) == -total  # still owed
    assert [alert.status for alert in await alerts(db, SETTLEMENT_PAYOUT_FAILED, run_id)] == [AlertStatus.OPEN]

    retried = await settlements.retry_payout(
        finance.client, settlement_workflow_id("host-retry", LAST.label), SettlementActor(by=APPROVER)
    )
    assert (retried.status, retried.payout_attempt) == (RunStatus.PAYING, 2)
    await sandbox.settle_payout(payout_key(run_id, 2), PayoutStatus.SUCCEEDED)
    paid = await finance.result("host-retry", LAST)

    assert (paid.status, paid.payout_attempt) == (RunStatus.PAID, 2)
    assert [(p.attempt, p.status) for p in await payouts_of(db, run_id)] == [(1, "failed"), (2, "succeeded")]
    assert await ledger_keys(db, f"settlement:{run_id}:payout") == [f"{payout_key(run_id, 2)}:paid"]
    assert await balance(db, partner_payable("host-retry")) == 0
    assert [alert.status for alert in await alerts(db, SETTLEMENT_PAYOUT_FAILED, run_id)] == [AlertStatus.RESOLVED]
    await record_history(settlement_workflow_id("host-retry", LAST.label), "settlement_payout_failed_then_retried")


async def test_a_swap_refunded_after_its_period_settled_is_clawed_back_in_the_next_run(
    finance: Finance, db: Database
) -> None:
    plan = await station_host(db, "host-clawback")
    earlier = await swaps_at_host(db, "host-clawback", plan, BEFORE, 10)
    await finance.start("host-clawback", BEFORE)
    await finance.until("host-clawback", BEFORE, lambda s: s.status == RunStatus.AWAITING_APPROVAL, 0)
    await finance.approve("host-clawback", BEFORE)
    assert (await finance.result("host-clawback", BEFORE)).status == RunStatus.PAID

    clawed = await refunded_after_settlement(db, "host-clawback", earlier[3].swap_id, "refund-after")
    later = await swaps_at_host(db, "host-clawback", plan, LAST, 10)
    await finance.start("host-clawback", LAST)
    state = await finance.until("host-clawback", LAST, lambda s: s.status == RunStatus.AWAITING_APPROVAL, 0)

    assert state.total_minor == sum(a.amount_minor for a in later) - clawed
    lines = await lines_of(db, settlement_run_id("host-clawback", LAST.label))
    clawbacks = [line for line in lines if line.kind == "clawback"]
    assert [(line.amount_minor, line.detail["refund_id"], line.detail["swap_id"]) for line in clawbacks] == [
        (-clawed, "refund-after", earlier[3].swap_id)
    ]
    await finance.approve("host-clawback", LAST)
    assert (await finance.result("host-clawback", LAST)).status == RunStatus.PAID
    assert await balance(db, partner_payable("host-clawback")) == 0


async def test_a_second_start_of_the_same_period_answers_the_first_run(finance: Finance, db: Database) -> None:
    plan = await station_host(db, "host-twice")
    await swaps_at_host(db, "host-twice", plan, LAST, 5)
    first = await finance.start("host-twice", LAST, by=PREPARER)
    await finance.until("host-twice", LAST, lambda s: s.status == RunStatus.AWAITING_APPROVAL, 0)

    second = await finance.start("host-twice", LAST, by="someone-else")

    assert (second.run_id, second.prepared_by, second.status) == (first.run_id, PREPARER, RunStatus.AWAITING_APPROVAL)
    async with db.sessions() as session:
        assert await session.scalar(select(func.count()).where(SettlementRun.partner_id == "host-twice")) == 1


async def test_a_payout_provider_unreachable_for_hours_pays_once_it_is_back(
    finance: Finance, db: Database, sandbox: SandboxPayoutProvider
) -> None:
    plan = await station_host(db, "host-outage")
    await swaps_at_host(db, "host-outage", plan, LAST, 5)
    run_id = settlement_run_id("host-outage", LAST.label)
    await finance.start("host-outage", LAST)
    await finance.until("host-outage", LAST, lambda s: s.status == RunStatus.AWAITING_APPROVAL, 0)
    sandbox.unreachable = True
    await finance.approve("host-outage", LAST)
    approved_at = await finance.env.get_current_time()

    async def outage() -> None:
        while await finance.env.get_current_time() - approved_at < timedelta(hours=3):
            await asyncio.sleep(0.05)
        sandbox.unreachable = False

    ending = asyncio.create_task(outage())
    paid = await finance.result("host-outage", LAST)
    await ending

    assert paid.status == RunStatus.PAID
    assert [(p.attempt, p.status) for p in await payouts_of(db, run_id)] == [(1, "succeeded")]
    async with db.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(SandboxPayout)) == 1
    assert await balance(db, partner_payable("host-outage")) == 0


async def test_a_payout_whose_answer_was_lost_is_found_and_not_paid_again(
    finance: Finance, db: Database, settings: Settings, temporal_env: WorkflowEnvironment
) -> None:
    losing = LosesAnswers(db)
    activities = SettlementActivities(db, settings, {PayoutMethod.SANDBOX: losing})
    queue = f"{settings.temporal.task_queue}-lost"
    plan = await station_host(db, "host-lost")
    await swaps_at_host(db, "host-lost", plan, LAST, 5)
    lost_settings = settings.updated(temporal={"task_queue": queue})
    async with Worker(
        temporal_env.client, task_queue=queue, workflows=[SettlementWorkflow], activities=activities.activities()
    ):
        finance.started.append(settlement_workflow_id("host-lost", LAST.label))
        await settlements.start_settlement(temporal_env.client, lost_settings, db, "host-lost", LAST.label, PREPARER)
        await finance.until("host-lost", LAST, lambda s: s.status == RunStatus.AWAITING_APPROVAL, 0)
        await finance.approve("host-lost", LAST)
        paid = await finance.result("host-lost", LAST)

    assert paid.status == RunStatus.PAID and losing.lost == 1
    async with db.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(SandboxPayout)) == 1


async def test_an_unapproved_run_reminds_finance_after_the_configured_time_and_again(
    finance: Finance, db: Database
) -> None:
    plan = await station_host(db, "host-remind")
    await swaps_at_host(db, "host-remind", plan, LAST, 5)
    run_id = settlement_run_id("host-remind", LAST.label)
    await finance.start("host-remind", LAST)
    await finance.until("host-remind", LAST, lambda s: s.status == RunStatus.AWAITING_APPROVAL, 0)
    assert await alerts(db, SETTLEMENT_UNAPPROVED, run_id) == []

    for reminders in (1, 2):
        await finance.env.sleep(REMIND_AFTER_S)
        for _ in range(200):
            found = await alerts(db, SETTLEMENT_UNAPPROVED, run_id)
            if found and found[0].occurrences == reminders:
                break
            await asyncio.sleep(0.05)
        assert [(alert.status, alert.occurrences) for alert in found] == [(AlertStatus.OPEN, reminders)]

    await finance.approve("host-remind", LAST)
    assert [alert.status for alert in await alerts(db, SETTLEMENT_UNAPPROVED, run_id)] == [AlertStatus.RESOLVED]


async def test_a_period_below_the_minimum_payout_is_carried_into_the_next_run(finance: Finance, db: Database) -> None:
    plan = await station_host(db, "host-small", minimum_payout_minor=1000)
    await swaps_at_host(db, "host-small", plan, BEFORE, 5)  # 5 × 30
    await finance.start("host-small", BEFORE)
    small = await finance.result("host-small", BEFORE)
    assert (small.status, small.total_minor) == (RunStatus.NOTHING_DUE, 0)
    assert [line.kind for line in await lines_of(db, small.run_id)] == ["accruals", "carry_forward"]

    await swaps_at_host(db, "host-small", plan, LAST, 30)  # 30 × 30
    await finance.start("host-small", LAST)
    state = await finance.until("host-small", LAST, lambda s: s.status == RunStatus.AWAITING_APPROVAL, 0)

    assert state.total_minor == 150 + 900
    lines = await lines_of(db, state.run_id)
    assert [(line.kind, line.amount_minor) for line in lines] == [("accruals", 900), ("carried_in", 150)]


async def test_a_bank_transfer_is_paid_when_finance_says_the_bank_paid_it(finance: Finance, db: Database) -> None:
    plan = await station_host(db, "host-bank", method="bank")
    accruals = await swaps_at_host(db, "host-bank", plan, LAST, 5)
    await finance.start("host-bank", LAST)
    await finance.until("host-bank", LAST, lambda s: s.status == RunStatus.AWAITING_APPROVAL, 0)
    await finance.approve("host-bank", LAST)
    waiting = await finance.until("host-bank", LAST, lambda s: s.payout_status == PayoutStatus.AWAITING_BANK, 0)
    assert waiting.status == RunStatus.PAYING

    paid = await settlements.bank_result(
        finance.client,
        settlement_workflow_id("host-bank", LAST.label),
        BankResult(by=APPROVER, paid=True, reference="ICBC-20261208-001"),
    )

    assert (paid.status, paid.payout_status) == (RunStatus.PAID, PayoutStatus.SUCCEEDED)
    assert await balance(db, BANK_CASH) == -sum(a.amount_minor for a in accruals)
    assert await balance(db, partner_payable("host-bank")) == 0


async def tick(finance: Finance, name: str, cadence: domain.Cadence = MONTHLY) -> DueResult:
    """What a tick of the cadence's schedule does: the SettlementsDue workflow, run to its end."""
    return await finance.client.execute_workflow(
        SettlementsDueWorkflow.run,
        DueRequest(cadence=cadence),
        id=f"settlements-due/{cadence.name}-{name}",
        task_queue=finance.settings.temporal.task_queue,
    )


@pytest.mark.records_history
async def test_each_tick_of_the_schedule_starts_a_partner_s_earliest_closed_period_to_settle(
    finance: Finance, db: Database, record_history: RecordHistory
) -> None:
    plan = await station_host(db, "host-due")
    await swaps_at_host(db, "host-due", plan, BEFORE, 3)
    await swaps_at_host(db, "host-due", plan, LAST, 3)
    await station_host(db, "host-idle")  # nothing accrued: nothing to settle
    earlier, later = (settlement_workflow_id("host-due", period.label) for period in (BEFORE, LAST))
    finance.started += [earlier, later]

    assert await tick(finance, "1") == DueResult(started=(earlier,))
    state = await finance.until("host-due", BEFORE, lambda s: s.status == RunStatus.AWAITING_APPROVAL, 0)
    assert await tick(finance, "2") == DueResult(started=(later,))
    await finance.until("host-due", LAST, lambda s: s.status == RunStatus.AWAITING_APPROVAL, 0)
    assert await tick(finance, "3") == DueResult()

    assert state.prepared_by == "schedule"
    await record_history("settlements-due/monthly-1", "settlements_due")


async def test_a_tick_leaves_a_run_already_started_as_it_is(finance: Finance, db: Database) -> None:
    plan = await station_host(db, "host-started")
    await swaps_at_host(db, "host-started", plan, LAST, 3)
    start = await settlements.settlement_start(finance.db, finance.settings, "host-started", LAST.label, PREPARER)
    workflow_id = settlement_workflow_id("host-started", LAST.label)
    finance.started.append(workflow_id)
    # Started where no worker polls: it has not frozen its period, so the tick finds the period due.
    await finance.client.start_workflow(SettlementWorkflow.run, start, id=workflow_id, task_queue="nobody-polls")

    assert await tick(finance, "started") == DueResult(running=(workflow_id,))


async def test_a_partner_on_another_cadence_is_not_due(finance: Finance, db: Database) -> None:
    plan = await station_host(db, "host-weekly")
    await swaps_at_host(db, "host-weekly", plan, LAST, 3)
    async with db.transaction() as session:
        await session.execute(
            update(CommissionPlan).where(CommissionPlan.id == plan.plan_id).values(cadence="minutes", cadence_minutes=5)
        )
    assert await tick(finance, "other") == DueResult()


async def test_a_period_not_over_yet_is_not_settled(finance: Finance, db: Database) -> None:
    await station_host(db, "host-early")
    running = domain.period_containing(utcnow(), MONTHLY, SHANGHAI)
    with pytest.raises(Conflict, match="not over"):
        await finance.start("host-early", running)


async def test_a_label_of_another_cadence_names_no_period_of_the_partner(finance: Finance, db: Database) -> None:
    await station_host(db, "host-label")
    week = domain.period_containing(LAST.start, domain.Cadence(kind=domain.CadenceKind.WEEKLY), SHANGHAI)
    with pytest.raises(Invalid, match="settles monthly"):
        await finance.start("host-label", week)


@pytest.fixture
def configured(
    settings: Settings, temporal_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """The test's database, Temporal server and task queue as the ones `swapflow` commands use."""
    monkeypatch.setenv("SWAPFLOW_DATABASE_URL", settings.effective_database_url)
    monkeypatch.setenv("SWAPFLOW_TEMPORAL_ADDRESS", temporal_env.client.service_client.config.target_host)
    monkeypatch.setenv("SWAPFLOW_TEMPORAL_TASK_QUEUE", settings.temporal.task_queue)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


async def test_the_settlements_run_command_settles_the_previous_period_once_and_prints_its_state(
    finance: Finance, db: Database, configured: None, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = await station_host(db, "host-cli")
    await swaps_at_host(db, "host-cli", plan, LAST, 5)
    command = ["settlements", "run", "--partner", "host-cli", "--previous", "--by", PREPARER]
    finance.started.append(settlement_workflow_id("host-cli", LAST.label))

    assert await asyncio.to_thread(main, command) == 0
    await finance.until("host-cli", LAST, lambda s: s.status == RunStatus.AWAITING_APPROVAL, 0)
    assert await asyncio.to_thread(main, [*command[:-1], "someone-else"]) == 0

    printed = capsys.readouterr().out.splitlines()
    assert printed[-1] == f"settlement/host-cli/{LAST.label}: awaiting_approval, revision 1, total 150 CNY"
