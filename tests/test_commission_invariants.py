"""The commission rules of the invariant check (swapflow.ops.invariants, `commission.*`), against a real
database. Swaps accrue and a refund reverses through the real activities; a settled, paid period is
written as a settlement run writes it. Each test then breaks exactly one rule by writing rows directly,
and expects exactly that rule, about exactly that subject, to be reported."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from sqlalchemy import delete, select, update

from swapflow.db.commissions import CommissionAccrual, CommissionClawback, PartnerPayout, SettlementLine, SettlementRun
from swapflow.db.engine import Database
from swapflow.db.money import LedgerPosting, LedgerTransaction
from swapflow.domain.commissions import LineKind
from swapflow.ops.invariants import Rule, check_invariants
from swapflow.payments.ledger import BANK_CASH, COMMISSION_EXPENSE, Posting, partner_payable, post_transaction
from swapflow.payments.payouts import PayoutStatus
from swapflow.settings import Settings
from swapflow.workflows.settlement_contract import RunStatus
from tests.commission_harness import AGENT, FRANCHISEE, HOST, UNATTRIBUTED_RIDER, Swaps

ACCRUED, TIER, PAID = 48, 10, 58  # the franchisee's period: its accrual on the swap, a tier line, what it was paid


@dataclass
class Settled:
    """A swap whose franchisee's accrual was settled and paid, then refunded (clawed back, the others
    reversed); and a later swap, accrued and not settled."""

    swaps: Swaps
    refunded_order: str
    open_order: str
    run_id: str
    refund_id: str

    async def accrual(self, order_id: str, partner_id: str, kind: str = "percentage") -> CommissionAccrual:
        async with self.swaps.db.sessions() as session:
            row = await session.scalar(
                select(CommissionAccrual).where(
                    CommissionAccrual.order_id == order_id,
                    CommissionAccrual.partner_id == partner_id,
                    CommissionAccrual.kind == kind,
                )
            )
        assert row is not None
        return row

    async def book(self, key: str, kind: str, postings: list[Posting]) -> None:
        async with self.swaps.db.transaction() as session:
            await post_transaction(session, key=key, kind=kind, currency="CNY", postings=postings)


async def pay(swaps: Swaps, run_id: str, attempt: int, amount: int) -> None:
    """A succeeded payout of the run, booked as a payout's success books it: payable → bank."""
    key = f"settlement:{run_id}:payout:{attempt}"
    async with swaps.db.transaction() as session:
        session.add(
            PartnerPayout(
                key=key,
                run_id=run_id,
                attempt=attempt,
                partner_id=FRANCHISEE,
                method="bank",
                amount_minor=amount,
                currency="CNY",
                status=PayoutStatus.SUCCEEDED,
            )
        )
        await post_transaction(
            session,
            key=key,
            kind="commission_payout",
            currency="CNY",
            postings=[Posting(partner_payable(FRANCHISEE), amount), Posting(BANK_CASH, -amount)],
        )


@pytest.fixture
async def settled(db: Database, settings: Settings) -> Settled:
    swaps = Swaps(db, settings)
    await swaps.ready()
    refunded_order = await swaps.completed()
    run_id = await swaps.freeze(FRANCHISEE)
    async with db.transaction() as session:
        session.add_all(
            [
                SettlementLine(run_id=run_id, position=1, kind=LineKind.ACCRUALS, amount_minor=ACCRUED, label="a"),
                SettlementLine(run_id=run_id, position=2, kind=LineKind.TIER_ADJUSTMENT, amount_minor=TIER, label="t"),
            ]
        )
        await session.execute(
            update(SettlementRun).where(SettlementRun.id == run_id).values(total_minor=PAID, status=RunStatus.PAID)
        )
        await post_transaction(
            session,
            key=f"settlement:{run_id}:adjustments",
            kind="commission_adjustment",
            currency="CNY",
            postings=[Posting(COMMISSION_EXPENSE, TIER), Posting(partner_payable(FRANCHISEE), -TIER)],
        )
    await pay(swaps, run_id, 1, PAID)
    refund_id = await swaps.operator_refund(refunded_order)
    open_order = await swaps.completed(UNATTRIBUTED_RIDER)
    return Settled(swaps, refunded_order, open_order, run_id, refund_id)


async def found(db: Database) -> set[tuple[str, str]]:
    """Each violation of a commission rule as (rule, subject)."""
    report = await check_invariants(db)
    return {(v.rule, v.subject) for v in report.violations if v.rule.startswith("commission.")}


# ---------------------------------------------------------------------------------------------- clean


async def test_a_settled_paid_and_clawed_back_period_keeps_every_commission_rule(settled: Settled) -> None:
    assert [clawback.partner_id for clawback in await settled.swaps.clawbacks()] == [FRANCHISEE]
    # Owed the open swap's 48, less the 48 clawed back (its next run nets them).
    assert await settled.swaps.payables(FRANCHISEE) == {FRANCHISEE: 0}
    assert await found(settled.swaps.db) == set()


# ---------------------------------------------------------------------------------------------- runs


async def test_accrual_in_another_partners_run_is_reported(settled: Settled) -> None:
    accrual = await settled.accrual(settled.open_order, HOST)
    async with settled.swaps.db.transaction() as session:
        await session.execute(
            update(CommissionAccrual).where(CommissionAccrual.id == accrual.id).values(run_id=settled.run_id)
        )
    assert await found(settled.swaps.db) == {(Rule.COMMISSION_ACCRUAL_OUTSIDE_RUN, accrual.key)}


async def test_accrual_outside_its_runs_period_is_reported(settled: Settled) -> None:
    accrual = await settled.accrual(settled.refunded_order, FRANCHISEE)
    async with settled.swaps.db.transaction() as session:  # the period ends as the swap completes: exclusive
        await session.execute(
            update(SettlementRun).where(SettlementRun.id == settled.run_id).values(period_end=accrual.at)
        )
    assert await found(settled.swaps.db) == {(Rule.COMMISSION_ACCRUAL_OUTSIDE_RUN, accrual.key)}


async def test_accrual_reversed_before_settlement_yet_in_a_run_is_reported(settled: Settled) -> None:
    reversed_ = await settled.accrual(settled.refunded_order, HOST)
    assert reversed_.reversed_by_refund_id == settled.refund_id
    host_run = await settled.swaps.freeze(HOST)
    async with settled.swaps.db.transaction() as session:
        await session.execute(
            update(CommissionAccrual).where(CommissionAccrual.id == reversed_.id).values(run_id=host_run)
        )
    assert await found(settled.swaps.db) == {(Rule.COMMISSION_ACCRUAL_OUTSIDE_RUN, reversed_.key)}


async def test_run_whose_lines_do_not_make_its_total_is_reported(settled: Settled) -> None:
    async with settled.swaps.db.transaction() as session:
        session.add(
            SettlementLine(run_id=settled.run_id, position=3, kind=LineKind.ACCRUALS, amount_minor=2, label="x")
        )
    assert await found(settled.swaps.db) == {(Rule.COMMISSION_RUN_TOTAL_MISMATCH, settled.run_id)}


async def test_run_paid_twice_is_reported(settled: Settled) -> None:
    await pay(settled.swaps, settled.run_id, 2, PAID)
    assert await found(settled.swaps.db) == {(Rule.COMMISSION_RUN_PAID_TWICE, settled.run_id)}


async def test_run_marked_paid_whose_payout_failed_is_reported(settled: Settled) -> None:
    key = f"settlement:{settled.run_id}:payout:1"
    async with settled.swaps.db.transaction() as session:  # a failed payout moved no money
        await session.execute(update(PartnerPayout).where(PartnerPayout.key == key).values(status=PayoutStatus.FAILED))
        payout = await session.scalar(select(LedgerTransaction.id).where(LedgerTransaction.key == key))
        await session.execute(delete(LedgerPosting).where(LedgerPosting.transaction_id == payout))
        await session.execute(delete(LedgerTransaction).where(LedgerTransaction.id == payout))
    assert await found(settled.swaps.db) == {(Rule.COMMISSION_PAID_RUN_PAYOUT, settled.run_id)}


async def test_run_paid_another_amount_than_its_total_is_reported(settled: Settled) -> None:
    key = f"settlement:{settled.run_id}:payout:1"
    async with settled.swaps.db.transaction() as session:  # paid, and booked, 50 of 58
        await session.execute(update(PartnerPayout).where(PartnerPayout.key == key).values(amount_minor=50))
        payout = await session.scalar(select(LedgerTransaction.id).where(LedgerTransaction.key == key))
        for account, amount in ((partner_payable(FRANCHISEE), 50), (BANK_CASH, -50)):
            await session.execute(
                update(LedgerPosting)
                .where(LedgerPosting.transaction_id == payout, LedgerPosting.account == account)
                .values(amount_minor=amount)
            )
    assert await found(settled.swaps.db) == {(Rule.COMMISSION_PAID_RUN_PAYOUT, settled.run_id)}


# ---------------------------------------------------------------------------------------------- payables


async def test_payable_the_commissions_do_not_explain_is_reported(settled: Settled) -> None:
    await settled.book("manual:1", "adjustment", [Posting(COMMISSION_EXPENSE, 7), Posting(partner_payable(AGENT), -7)])
    assert await found(settled.swaps.db) == {(Rule.COMMISSION_PAYABLE_MISMATCH, AGENT)}


async def test_payable_of_a_settled_tier_line_never_booked_is_reported(settled: Settled) -> None:
    key = f"settlement:{settled.run_id}:adjustments"
    async with settled.swaps.db.transaction() as session:
        adjustment = await session.scalar(select(LedgerTransaction.id).where(LedgerTransaction.key == key))
        await session.execute(delete(LedgerPosting).where(LedgerPosting.transaction_id == adjustment))
        await session.execute(delete(LedgerTransaction).where(LedgerTransaction.id == adjustment))
    assert await found(settled.swaps.db) == {(Rule.COMMISSION_PAYABLE_MISMATCH, FRANCHISEE)}


# ---------------------------------------------------------------------------------------------- refunds


async def test_clawback_of_a_refund_that_does_not_exist_is_reported(settled: Settled) -> None:
    async with settled.swaps.db.transaction() as session:
        await session.execute(update(CommissionClawback).values(refund_id="refund-that-never-was"))
    clawed = await settled.accrual(settled.refunded_order, FRANCHISEE)
    assert await found(settled.swaps.db) == {(Rule.COMMISSION_REVERSAL_WITHOUT_REFUND, clawed.key)}


async def test_clawback_pointing_at_another_swaps_refund_is_reported(settled: Settled) -> None:
    other = await settled.swaps.operator_refund(settled.open_order)
    async with settled.swaps.db.transaction() as session:
        await session.execute(update(CommissionClawback).values(refund_id=other))
    clawed = await settled.accrual(settled.refunded_order, FRANCHISEE)
    assert await found(settled.swaps.db) == {(Rule.COMMISSION_REVERSAL_WITHOUT_REFUND, clawed.key)}


async def test_reversal_by_a_refund_that_does_not_exist_is_reported(settled: Settled) -> None:
    reversed_ = await settled.accrual(settled.refunded_order, HOST, "fixed")
    async with settled.swaps.db.transaction() as session:
        await session.execute(
            update(CommissionAccrual)
            .where(CommissionAccrual.id == reversed_.id)
            .values(reversed_by_refund_id="refund-that-never-was")
        )
    assert await found(settled.swaps.db) == {(Rule.COMMISSION_REVERSAL_WITHOUT_REFUND, reversed_.key)}
