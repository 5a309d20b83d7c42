"""Each way of paying, through the real charge and refund activities and the real database: wallet
(prepaid balance), subscription (N swaps a period), the sandbox; and the charge's guarantees: our
record before the provider is asked, a refusal is final, a lost answer never charges twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import select
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from swapflow.activities.payments import PaymentActivities
from swapflow.db.engine import Database
from swapflow.db.money import LedgerPosting, LedgerTransaction, Payment, SandboxPayment
from swapflow.domain.swaps import SwapStatus
from swapflow.ops.invariants import check_invariants
from swapflow.payments.provider import ChargeRequest, PaymentMethod, ProviderPayment, ProviderUnavailable
from swapflow.payments.refunds import RefundOrigin, charge_key, swap_refund_id
from swapflow.payments.sandbox import SandboxProvider
from swapflow.settings import Settings
from swapflow.workflows.refund_contract import RefundRef, RefundStart
from swapflow.workflows.swap_contract import ChargeInput, PaymentDeclinedError, PaymentResult, SwapFinish
from tests.money_harness import PRICE, RIDER, Money


@pytest.fixture
async def money(db: Database, settings: Settings) -> Money:
    return await Money(db, settings).ready()


async def postings(money: Money, key: str) -> dict[str, int]:
    async with money.db.sessions() as session:
        rows = await session.execute(
            select(LedgerPosting.account, LedgerPosting.amount_minor)
            .join(LedgerTransaction)
            .where(LedgerTransaction.key == key)
        )
        return dict(rows.tuples().all())


async def refund_in_full(money: Money, order_id: str) -> None:
    """The failed swap's refund, as its workflow runs it: open, submit, settle (these providers are instant)."""
    await money.records.finish(SwapFinish(order_id=order_id, status=SwapStatus.FAILED, reason="test"))
    plan = await money.refunds.prepare(
        RefundStart(
            refund_id=swap_refund_id(order_id), order_id=order_id, reason="test", origin=RefundOrigin.SWAP_COMPENSATION
        )
    )
    assert plan is not None
    update = await money.refunds.submit(RefundRef(refund_id=plan.refund_id))
    assert update.provider_status == "succeeded"
    await money.refunds.settle(RefundRef(refund_id=plan.refund_id))


async def declined(money: Money, order_id: str, price: int) -> ApplicationError:
    with pytest.raises(ApplicationError) as refused:
        await money.payments.charge(ChargeInput(order_id=order_id, amount_minor=price, currency="CNY"))
    assert refused.value.type == PaymentDeclinedError.TYPE and refused.value.non_retryable
    return refused.value


# ------------------------------------------------------------------------------------------ wallet


async def test_wallet_swap_debits_the_balance_and_the_riders_wallet_account(money: Money) -> None:
    await money.wallet_rider(1000)
    order_id = await money.charged()
    assert await money.wallet_balance() == 1000 - PRICE
    assert await postings(money, charge_key(order_id)) == {f"wallet:{RIDER}": PRICE, "deferred_revenue:swaps": -PRICE}


async def test_wallet_short_of_the_price_declines_and_takes_nothing(money: Money) -> None:
    await money.wallet_rider(PRICE - 1)
    order_id, price, _ = await money.admitted()
    refusal = await declined(money, order_id, price)
    assert "insufficient_balance" in str(refusal.details)
    assert await money.wallet_balance() == PRICE - 1
    assert await money.ledger_kinds(order_id) == []
    assert await money.count(Payment, Payment.status == "declined") == 1


async def test_wallet_refund_credits_the_charge_back(money: Money) -> None:
    await money.wallet_rider(1000)
    order_id = await money.charged()
    await refund_in_full(money, order_id)
    assert await money.wallet_balance() == 1000
    assert await postings(money, f"refund:{swap_refund_id(order_id)}:settled") == {
        "refunds_payable": PRICE,
        f"wallet:{RIDER}": -PRICE,
    }
    report = await check_invariants(money.db)
    assert report.ok, report.violations


# ------------------------------------------------------------------------------------------ subscription


async def test_subscription_swap_uses_one_swap_at_the_plans_per_swap_value(money: Money) -> None:
    await money.subscription_rider(swaps=2)
    order_id = await money.charged()
    assert await postings(money, charge_key(order_id)) == {f"subscription:{RIDER}": 400, "deferred_revenue:swaps": -400}


async def test_subscription_beyond_its_allowance_is_declined(money: Money) -> None:
    await money.subscription_rider(swaps=1)
    first = await money.charged()
    await money.records.finish(SwapFinish(order_id=first, status=SwapStatus.FAILED, reason="test"))
    order_id, price, _ = await money.admitted()
    refusal = await declined(money, order_id, price)
    assert "subscription_allowance_used" in str(refusal.details)


async def test_subscription_refund_gives_the_swap_back(money: Money) -> None:
    await money.subscription_rider(swaps=1)
    first = await money.charged()
    await refund_in_full(money, first)
    second = await money.charged()  # the period's one swap is available again
    assert await postings(money, charge_key(second)) == {f"subscription:{RIDER}": 400, "deferred_revenue:swaps": -400}


# ------------------------------------------------------------------------------------------ the charge


class Unreachable(SandboxProvider):
    async def charge(self, request: ChargeRequest) -> ProviderPayment:
        raise ProviderUnavailable("connection refused")


async def test_charge_is_recorded_under_its_key_before_the_provider_is_asked(money: Money) -> None:
    money.payments.providers = {**money.providers, PaymentMethod.SANDBOX: Unreachable(money.db)}
    order_id, price, currency = await money.admitted()
    with pytest.raises(ProviderUnavailable):  # retried by Temporal, with the same key and provider
        await money.payments.charge(ChargeInput(order_id=order_id, amount_minor=price, currency=currency))
    async with money.db.sessions() as session:
        record = await session.scalar(select(Payment).where(Payment.key == charge_key(order_id)))
    assert record is not None and (record.status, record.method, record.amount_minor) == ("initiated", "sandbox", price)


class AnswersTooLate(SandboxProvider):
    """Charges, then takes longer to answer than the activity may run (the first time only)."""

    calls = 0

    async def charge(self, request: ChargeRequest) -> ProviderPayment:
        payment = await super().charge(request)
        AnswersTooLate.calls += 1
        if AnswersTooLate.calls == 1:
            await asyncio.sleep(5)
        return payment


@workflow.defn(name="ChargeOnly")
class ChargeOnly:
    @workflow.run
    async def run(self, charge: ChargeInput) -> PaymentResult:
        return await workflow.execute_activity_method(
            PaymentActivities.charge,
            charge,
            start_to_close_timeout=timedelta(seconds=1),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=5),
        )


@pytest.fixture
async def late_worker(temporal_env: WorkflowEnvironment, settings: Settings, money: Money) -> AsyncIterator[None]:
    activities = PaymentActivities(
        money.db, {**money.providers, PaymentMethod.SANDBOX: AnswersTooLate(money.db)}, settings
    )
    async with Worker(
        temporal_env.client,
        task_queue=settings.temporal.task_queue,
        workflows=[ChargeOnly],
        activities=[activities.charge],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        yield


async def test_charge_attempt_that_timed_out_after_the_provider_charged_is_not_charged_again(
    temporal_env: WorkflowEnvironment, settings: Settings, money: Money, late_worker: None
) -> None:
    order_id, price, currency = await money.admitted()
    with temporal_env.auto_time_skipping_disabled():
        result = await temporal_env.client.execute_workflow(
            ChargeOnly.run,
            ChargeInput(order_id=order_id, amount_minor=price, currency=currency),
            id=f"charge-only-{order_id}",
            task_queue=settings.temporal.task_queue,
        )
    assert result.amount_minor == price
    assert AnswersTooLate.calls == 1  # the retry found the payment and never called charge again
    assert await money.count(SandboxPayment) == 1
    assert await money.ledger_kinds(order_id) == ["swap_charge"]


async def test_rider_whose_method_is_not_configured_here_is_declined_at_once(money: Money) -> None:
    await money.pays_by(RIDER, PaymentMethod.WECHAT)  # no WeChat Pay credentials in these settings
    order_id, price, _ = await money.admitted()
    refusal = await declined(money, order_id, price)
    assert "payment_method_unavailable" in str(refusal.details)
