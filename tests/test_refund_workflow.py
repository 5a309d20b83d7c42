"""The refund workflow follows a refund until the money is back, on the time-skipping server with the
real worker and database. The sandbox provider keeps refunds processing (for ten days of wall-clock
time) until a test settles them, as a bank would, in any final state."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import select
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.common import WorkflowIDReusePolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.testing import WorkflowEnvironment

from swapflow.db.engine import Database
from swapflow.db.money import LedgerPosting, LedgerTransaction, Refund, SandboxRefund
from swapflow.db.ops import Alert
from swapflow.ops.invariants import check_invariants
from swapflow.payments.provider import (
    REFUND_NOTIFICATION_SIGNAL,
    RefundStatus,
    refund_id_from_key,
    refund_key,
    refund_submission_key,
)
from swapflow.payments.refunds import RefundOrigin, swap_refund_id
from swapflow.settings import Settings
from swapflow.workflows.refund import RefundWorkflow
from swapflow.workflows.refund_contract import RefundOutcome, RefundStart, refund_workflow_id
from tests.conftest import test_server_path as time_skipping_server_path
from tests.history_recording import RecordHistory
from tests.money_harness import PRICE, Money
from tests.swap_harness import running_worker


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.updated(payments={"sandbox_refund_processing_s": 10 * 86400.0})


@pytest.fixture(scope="module")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of this module's own: these tests skip days, and workflows other tests leave
    behind on the shared server (their workers gone) would hold its clock back."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=time_skipping_server_path(), data_converter=pydantic_data_converter
    )
    yield env
    await env.shutdown()


@pytest.fixture
async def money(temporal_env: WorkflowEnvironment, settings: Settings, db: Database) -> AsyncIterator[Money]:
    async with running_worker(temporal_env.client, settings, db):
        yield await Money(db, settings).ready()


async def start_refund(
    env: WorkflowEnvironment, settings: Settings, order_id: str
) -> tuple[str, WorkflowHandle[RefundWorkflow, RefundOutcome]]:
    """The refund a failed swap's compensation starts."""
    refund_id = swap_refund_id(order_id)
    handle = await env.client.start_workflow(
        RefundWorkflow.run,
        RefundStart(
            refund_id=refund_id, order_id=order_id, reason="swap failed", origin=RefundOrigin.SWAP_COMPENSATION
        ),
        id=refund_workflow_id(refund_id),
        task_queue=settings.temporal.task_queue,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
    )
    return refund_id, handle


async def until_submitted(money: Money, key: str) -> None:
    """Until the provider holds the submission `key` (activities run in real time)."""
    for _ in range(200):
        async with money.db.sessions() as session:
            if await session.scalar(select(SandboxRefund.id).where(SandboxRefund.idempotency_key == key)):
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{key} never submitted")


async def timers_fired(handle: WorkflowHandle[RefundWorkflow, RefundOutcome]) -> int:
    events = [event async for event in handle.fetch_history_events()]
    return sum(1 for event in events if event.event_type == EventType.EVENT_TYPE_TIMER_FIRED)


async def account_balance(db: Database, account: str) -> int:
    async with db.sessions() as session:
        rows = await session.scalars(select(LedgerPosting.amount_minor).where(LedgerPosting.account == account))
        return sum(rows)


async def test_refund_processing_for_two_days_then_succeeded_is_followed_until_it_lands(
    temporal_env: WorkflowEnvironment, settings: Settings, money: Money
) -> None:
    order_id = await money.failed_after_charge()
    refund_id, handle = await start_refund(temporal_env, settings, order_id)
    started = await temporal_env.get_current_time()
    seen_processing: list[Refund] = []

    async def bank() -> None:
        """Lands the refund once two days of workflow time have passed (time skips while we await the result)."""
        while await temporal_env.get_current_time() - started < timedelta(days=2):
            await asyncio.sleep(0.05)
        seen_processing.append(await money.refund(refund_id))
        assert await account_balance(money.db, "refunds_payable") == -PRICE  # owed while processing
        await money.sandbox.settle_refund(refund_key(refund_id), RefundStatus.SUCCEEDED)

    banking = asyncio.create_task(bank())
    outcome = await handle.result()
    await banking

    [refund] = seen_processing
    assert (refund.status, refund.provider_status) == ("processing", "processing")
    assert refund.expected_by is not None and refund.submitted_at is not None
    assert (outcome.state, outcome.attempts) == ("succeeded", 1)
    assert outcome.polls >= 95  # 1, 5, 10, 20, then every 30 minutes over two days
    landed = await money.refund(refund_id)
    assert landed.final_at is not None
    assert landed.succeeded_at is not None and landed.succeeded_at > refund.submitted_at  # as the provider says
    assert await money.ledger_kinds(order_id) == ["swap_charge", "swap_refund", "refund_settled"]
    assert await account_balance(money.db, "refunds_payable") == 0
    history = [event async for event in handle.fetch_history_events()]
    followed = history[-1].event_time.ToDatetime() - history[0].event_time.ToDatetime()
    print(f"history of a {followed} follow: {len(history)} events, {outcome.polls} polls")
    assert followed >= timedelta(days=2)
    assert len(history) < 2000  # a 3-day follow stays far below the limits: no continue-as-new needed
    report = await check_invariants(money.db)
    assert report.ok, report.violations


@pytest.mark.records_history
async def test_refund_the_provider_closed_is_resubmitted_with_a_new_number(
    temporal_env: WorkflowEnvironment, settings: Settings, money: Money, record_history: RecordHistory
) -> None:
    order_id = await money.failed_after_charge()
    refund_id, handle = await start_refund(temporal_env, settings, order_id)
    second = refund_submission_key(refund_id, 2)
    assert (second, refund_id_from_key(second)) == (f"refund:{refund_id}:2", refund_id)

    async def bank() -> None:
        """Closes the first submission; lands the second, once the workflow has made it."""
        await until_submitted(money, refund_key(refund_id))
        await money.sandbox.settle_refund(refund_key(refund_id), RefundStatus.CLOSED)
        await until_submitted(money, second)
        await money.sandbox.settle_refund(second, RefundStatus.SUCCEEDED)

    banking = asyncio.create_task(bank())
    outcome = await handle.result()
    await banking
    await record_history(handle.id, "refund_resubmitted_after_the_provider_closed_it")

    assert (outcome.state, outcome.attempts) == ("succeeded", 2)
    refund = await money.refund(refund_id)
    assert (refund.key, refund.attempt) == (second, 2)
    # Money moved once: the closed submission returned nothing, the ledger owes and settles one refund.
    assert await money.ledger_kinds(order_id) == ["swap_charge", "swap_refund", "refund_settled"]
    assert await money.count(SandboxRefund) == 2
    report = await check_invariants(money.db)
    assert report.ok, report.violations


async def test_abnormal_refund_is_escalated_to_finance(
    temporal_env: WorkflowEnvironment, settings: Settings, money: Money
) -> None:
    order_id = await money.failed_after_charge()
    refund_id, handle = await start_refund(temporal_env, settings, order_id)
    await until_submitted(money, refund_key(refund_id))
    await money.sandbox.settle_refund(refund_key(refund_id), RefundStatus.ABNORMAL)
    outcome = await handle.result()

    assert outcome.state == "escalated"
    refund = await money.refund(refund_id)
    assert (refund.status, refund.escalated, refund.provider_status) == ("escalated", True, "abnormal")
    assert await money.count(Alert, Alert.kind == "refund_escalated", Alert.order_id == order_id) == 1
    # Still owed to the rider: finance's abnormal-refund path settles it.
    assert await money.ledger_kinds(order_id) == ["swap_charge", "swap_refund"]
    assert await account_balance(money.db, "refunds_payable") == -refund.amount_minor


async def test_notification_before_the_poll_ends_the_wait_early(
    temporal_env: WorkflowEnvironment, settings: Settings, money: Money
) -> None:
    order_id = await money.failed_after_charge()
    refund_id, handle = await start_refund(temporal_env, settings, order_id)
    await until_submitted(money, refund_key(refund_id))
    landed = await money.sandbox.settle_refund(refund_key(refund_id), RefundStatus.SUCCEEDED)
    await handle.signal(REFUND_NOTIFICATION_SIGNAL, landed)
    outcome = await handle.result()

    assert (outcome.state, outcome.polls) == ("succeeded", 1)
    assert await timers_fired(handle) == 0  # woken by the notification, before the first poll was due


async def test_duplicate_and_stale_notifications_change_nothing(
    temporal_env: WorkflowEnvironment, settings: Settings, money: Money
) -> None:
    order_id = await money.failed_after_charge()
    refund_id, handle = await start_refund(temporal_env, settings, order_id)
    await until_submitted(money, refund_key(refund_id))
    processing = await money.sandbox.find_refund(refund_key(refund_id))
    assert processing is not None
    # A notification the provider's state does not bear out (yet) costs one poll, nothing more.
    await handle.signal(REFUND_NOTIFICATION_SIGNAL, processing.model_copy(update={"status": RefundStatus.SUCCEEDED}))
    for _ in range(200):  # the poll it wakes happens at once, without time passing
        if (await handle.query(RefundWorkflow.progress)).polls == 1:
            break
        await asyncio.sleep(0.05)
    assert (await handle.query(RefundWorkflow.progress)).state == "processing"
    landed = await money.sandbox.settle_refund(refund_key(refund_id), RefundStatus.SUCCEEDED)
    await handle.signal(REFUND_NOTIFICATION_SIGNAL, landed)
    await handle.signal(REFUND_NOTIFICATION_SIGNAL, landed)
    outcome = await handle.result()

    assert outcome.state == "succeeded"
    assert await money.ledger_kinds(order_id) == ["swap_charge", "swap_refund", "refund_settled"]
    async with money.db.sessions() as session:
        settled = await session.scalar(
            select(LedgerTransaction).where(LedgerTransaction.key == f"refund:{refund_id}:settled")
        )
    assert settled is not None


async def test_one_failure_opens_one_refund_however_often_its_refund_is_started(
    temporal_env: WorkflowEnvironment, settings: Settings, money: Money
) -> None:
    order_id = await money.failed_after_charge()
    refund_id, handle = await start_refund(temporal_env, settings, order_id)
    await until_submitted(money, refund_key(refund_id))
    with pytest.raises(WorkflowAlreadyStartedError):
        await start_refund(temporal_env, settings, order_id)
    await money.sandbox.settle_refund(refund_key(refund_id), RefundStatus.SUCCEEDED)
    await handle.result()
    with pytest.raises(WorkflowAlreadyStartedError):  # a finished refund is never run again
        await start_refund(temporal_env, settings, order_id)
    assert await money.count(Refund, Refund.order_id == order_id) == 1
    assert await money.count(SandboxRefund) == 1
