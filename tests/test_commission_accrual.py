"""Every completed swap accrues its partners' commissions with its revenue, and a refund of it reverses
them: before settlement by marking them reversed, after by a clawback for the partner's next run. On
the demo network's partners (swapflow.demo.partners), with swaps run by the real worker and cabinet or
through the real activities, and the ledger and the invariant check read after each."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, update
from temporalio.testing import WorkflowEnvironment

from swapflow.db.commissions import CommissionPlanVersion, Partner, PartnerAttribution, PlanAssignment
from swapflow.db.engine import Database
from swapflow.db.swaps import SwapOrder
from swapflow.domain.swaps import SwapStage, SwapStatus
from swapflow.ops.invariants import check_invariants
from swapflow.payments.commissions import accrue_swap
from swapflow.payments.ledger import COMMISSION_EXPENSE
from swapflow.services.swaps import swap_request
from swapflow.settings import Settings
from swapflow.simulator.fleet import sim_battery
from swapflow.workflows.swap import SwapWorkflow
from swapflow.workflows.swap_contract import swap_workflow_id
from tests.commission_harness import AGENT, FRANCHISEE, HOST, PARENT, RIDER, UNATTRIBUTED_RIDER, Swaps
from tests.money_harness import CABINET, PRICE
from tests.swap_harness import battery_of, new_order, running_cabinet, running_worker

# What a swap of PRICE (600) at CABINET by RIDER accrues under the demo plans: (partner, kind, level) → amount.
ACCRUED = {
    (HOST, "percentage", None): 18,  # 3 % of 600
    (HOST, "fixed", None): 60,  # a tenth of Shanghai's price, per swap
    (FRANCHISEE, "percentage", None): 48,  # 8 % (its tiers start above 20 swaps a period)
    (AGENT, "percentage", None): 24,  # 4 %
    (PARENT, "override", 1): 5,  # 20 % of the sub-agent's 24 = 4.8, rounded half up
}


@pytest.fixture
async def swaps(db: Database, settings: Settings) -> Swaps:
    swaps = Swaps(db, settings)
    await swaps.ready()
    return swaps


async def assert_clean(db: Database) -> None:
    """The ledger and commission rules hold (an operator's refund is not a swap's refund to the money rules)."""
    report = await check_invariants(db)
    assert [v for v in report.violations if v.rule.startswith(("ledger.", "commission."))] == []


# ------------------------------------------------------------------------------------------ accrual


async def test_a_swap_run_by_the_worker_accrues_its_host_franchisee_agent_and_override(
    temporal_env: WorkflowEnvironment, settings: Settings, db: Database
) -> None:
    async with (
        running_worker(temporal_env.client, settings, db),
        running_cabinet(temporal_env.client, settings, db, CABINET) as cabinet,
    ):
        with temporal_env.auto_time_skipping_disabled():
            order_id = await new_order(db, RIDER, CABINET)
            request = swap_request(settings, order_id=order_id, rider_id=RIDER, cabinet_id=CABINET)
            handle = await temporal_env.client.start_workflow(
                SwapWorkflow.run, request, id=swap_workflow_id(order_id), task_queue=settings.temporal.task_queue
            )
            held = await battery_of(db, RIDER)
            assert held is not None
            order = await until_stage(db, order_id, SwapStage.RETURN_DOOR_OPEN)
            await until_door_open(cabinet, order.return_slot_no)
            await cabinet.insert_battery(order.return_slot_no, sim_battery(held))
            order = await until_stage(db, order_id, SwapStage.CHARGED_DOOR_OPEN)
            await until_door_open(cabinet, order.charged_slot_no)
            await cabinet.take_battery(order.charged_slot_no)
            result = await handle.result()
    assert result.status == SwapStatus.COMPLETED
    swaps = Swaps(db, settings)
    assert await swaps.accrued(order_id) == ACCRUED
    assert await swaps.ledger_kinds(order_id) == ["swap_charge", "swap_revenue", "commission_accrual"]
    assert await swaps.balance(COMMISSION_EXPENSE) == sum(ACCRUED.values())
    assert await swaps.payables(HOST, FRANCHISEE, AGENT, PARENT) == {
        HOST: 78,
        FRANCHISEE: 48,
        AGENT: 24,
        PARENT: 5,
    }
    await assert_clean(db)


async def until_stage(db: Database, order_id: str, stage: SwapStage) -> SwapOrder:
    for _ in range(300):
        async with db.sessions() as session:
            order = await session.get(SwapOrder, order_id)
        assert order is not None and order.status != SwapStatus.FAILED, order and order.failure_reason
        if order.stage == stage:
            return order
        await asyncio.sleep(0.05)
    raise AssertionError(f"swap {order_id} never reached {stage}")


async def until_door_open(cabinet: object, slot_no: int | None) -> None:
    assert slot_no is not None
    for _ in range(300):
        if cabinet.door_open(slot_no):  # type: ignore[attr-defined]
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"door {slot_no} never opened")


async def test_each_accrual_records_its_plan_rate_and_basis(swaps: Swaps) -> None:
    order_id = await swaps.completed()
    rows = {(row.partner_id, row.kind): row for row in await swaps.accruals(order_id)}
    override = rows[(PARENT, "override")]
    assert (override.basis_minor, override.rate_bp, override.plan_id) == (24, 2_000, "demo-channel-agent-sh")
    fixed = rows[(HOST, "fixed")]
    assert (fixed.basis_minor, fixed.rate_bp, fixed.role) == (None, None, "station_host")
    assert rows[(FRANCHISEE, "percentage")].key == f"swap:{order_id}:{FRANCHISEE}:percentage"
    assert override.key == f"swap:{order_id}:{PARENT}:override:1"
    async with swaps.db.sessions() as session:
        order = await session.get(SwapOrder, order_id)
    assert order is not None and all(row.at == order.finished_at for row in rows.values())


async def test_a_rider_brought_by_no_agent_accrues_only_host_and_franchisee(swaps: Swaps) -> None:
    order_id = await swaps.completed(UNATTRIBUTED_RIDER)
    assert set(await swaps.accrued(order_id)) == {
        (HOST, "percentage", None),
        (HOST, "fixed", None),
        (FRANCHISEE, "percentage", None),
    }
    await assert_clean(swaps.db)


async def test_a_failed_swap_accrues_nothing(swaps: Swaps) -> None:
    order_id = await swaps.charged()
    await swaps.finish(order_id, SwapStatus.FAILED)
    assert await swaps.accruals(order_id) == []
    assert "commission_accrual" not in await swaps.ledger_kinds(order_id)


async def test_a_retried_finish_accrues_once(swaps: Swaps) -> None:
    order_id = await swaps.completed()
    await swaps.finish(order_id, SwapStatus.COMPLETED)
    async with swaps.db.transaction() as session:  # the accrual itself, asked again
        order = await session.get(SwapOrder, order_id)
        assert order is not None and order.finished_at is not None
        assert await accrue_swap(session, order, PRICE, order.finished_at) == ()
    assert await swaps.accrued(order_id) == ACCRUED
    assert await swaps.ledger_kinds(order_id) == ["swap_charge", "swap_revenue", "commission_accrual"]
    assert await swaps.balance(COMMISSION_EXPENSE) == sum(ACCRUED.values())


async def test_an_inactive_partner_earns_nothing_and_the_others_are_unchanged(swaps: Swaps) -> None:
    async with swaps.db.transaction() as session:
        await session.execute(update(Partner).where(Partner.id == AGENT).values(active=False))
    order_id = await swaps.completed()
    assert await swaps.accrued(order_id) == {key: amount for key, amount in ACCRUED.items() if key[0] != AGENT}
    await assert_clean(swaps.db)


async def test_a_plan_in_another_currency_earns_nothing_and_the_swap_still_completes(swaps: Swaps) -> None:
    async with swaps.db.transaction() as session:
        await session.execute(
            update(CommissionPlanVersion)
            .where(CommissionPlanVersion.plan_id == "demo-station-host-sh")
            .values(currency="EUR")
        )
    order_id = await swaps.completed()
    async with swaps.db.sessions() as session:
        assert await session.scalar(select(SwapOrder.status).where(SwapOrder.id == order_id)) == SwapStatus.COMPLETED
    assert {partner for partner, _, _ in await swaps.accrued(order_id)} == {FRANCHISEE, AGENT, PARENT}


# ------------------------------------------------------------------------------------------ refunds


async def test_a_refund_before_settlement_reverses_every_accrual_of_the_swap(swaps: Swaps) -> None:
    order_id = await swaps.completed()
    refund_id = await swaps.operator_refund(order_id, amount_minor=PRICE // 2)  # any refund reverses them all
    rows = await swaps.accruals(order_id)
    assert {row.reversed_by_refund_id for row in rows} == {refund_id}
    assert all(row.reversed_at is not None and row.run_id is None for row in rows)
    assert await swaps.clawbacks() == []
    assert await swaps.ledger_kinds(order_id) == [
        "swap_charge",
        "swap_revenue",
        "commission_accrual",
        "refund",
        "commission_reversal",
    ]
    assert await swaps.balance(COMMISSION_EXPENSE) == 0
    assert await swaps.payables(HOST, FRANCHISEE, AGENT, PARENT) == {HOST: 0, FRANCHISEE: 0, AGENT: 0, PARENT: 0}
    await assert_clean(swaps.db)


async def test_a_refund_after_the_accrual_was_settled_claws_it_back_pointing_at_the_refund(swaps: Swaps) -> None:
    order_id = await swaps.completed()
    await swaps.freeze(FRANCHISEE)
    refund_id = await swaps.operator_refund(order_id)
    rows = {row.partner_id: row for row in await swaps.accruals(order_id)}
    (clawback,) = await swaps.clawbacks()
    assert (clawback.accrual_id, clawback.refund_id, clawback.partner_id) == (
        rows[FRANCHISEE].id,
        refund_id,
        FRANCHISEE,
    )
    assert (clawback.amount_minor, clawback.currency, clawback.run_id) == (48, "CNY", None)  # for the next run
    assert rows[FRANCHISEE].reversed_by_refund_id is None  # it stays in its run
    assert {row.reversed_by_refund_id for partner, row in rows.items() if partner != FRANCHISEE} == {refund_id}
    assert await swaps.payables(FRANCHISEE) == {FRANCHISEE: 0}
    await assert_clean(swaps.db)


async def test_a_second_refund_of_the_swap_reverses_nothing_more(swaps: Swaps) -> None:
    order_id = await swaps.completed()
    await swaps.freeze(FRANCHISEE)
    first = await swaps.operator_refund(order_id, "first", amount_minor=100)
    await swaps.operator_refund(order_id, "second", amount_minor=100)
    assert {row.reversed_by_refund_id for row in await swaps.accruals(order_id)} == {first, None}
    assert [clawback.refund_id for clawback in await swaps.clawbacks()] == [first]
    assert (await swaps.ledger_kinds(order_id)).count("commission_reversal") == 1
    assert await swaps.balance(COMMISSION_EXPENSE) == 0
    await assert_clean(swaps.db)


async def test_a_partner_created_after_swaps_began_earns_from_its_next_swap(swaps: Swaps) -> None:
    await swaps.completed(UNATTRIBUTED_RIDER)  # the partners' book is loaded, and cached
    async with swaps.db.transaction() as session:
        session.add(
            Partner(
                id="agent-new",
                kind="channel_agent",
                name="new agent",
                cities=["SH"],
                time_zone="Asia/Shanghai",
                currency="CNY",
                payout_method="sandbox",
            )
        )
        await session.flush()
        session.add(
            PlanAssignment(
                partner_id="agent-new",
                plan_id="demo-channel-agent-sh",
                effective_from=datetime(2025, 1, 1, tzinfo=UTC),
                assigned_by="admin",
            )
        )
        session.add(PartnerAttribution(rider_id=UNATTRIBUTED_RIDER, partner_id="agent-new", source="admin", by="admin"))
    order_id = await swaps.completed(UNATTRIBUTED_RIDER)
    assert (await swaps.accrued(order_id))[("agent-new", "percentage", None)] == 24
