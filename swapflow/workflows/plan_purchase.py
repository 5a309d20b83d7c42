"""The plan purchase workflow, `plan_purchase/<purchase id>`: a rider buying a period of a plan, from
payment to a running plan.

Started by `POST /v1/riders/{id}/subscriptions` once the purchase and our payment record are written. The
same two steps as a top-up (workflows/topup.py): collect the payment through the rider's provider (a
pending one polled until the rider confirms it or its deadline), then settle, which asks the provider
itself: captured, the plan starts (or extends); otherwise whatever is open at the provider is voided and
the purchase ends failed, with no plan and nothing taken.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from swapflow.workflows.plan_purchase_contract import (
        PlanPurchaseOutcome,
        PlanPurchaseStart,
        collect_plan_purchase,
        settle_plan_purchase,
    )
    from swapflow.workflows.swap_contract import PaymentDeclinedError

COLLECT_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=12,
    non_retryable_error_types=[PaymentDeclinedError.TYPE],
)
# Money that moved must start the plan, however long the database is away: retried without a bound.
SETTLE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=5))


@workflow.defn(name="PlanPurchase")
class PlanPurchaseWorkflow:
    """One plan purchase: collected, then the plan started or the payment voided."""

    @workflow.run
    async def run(self, start: PlanPurchaseStart) -> PlanPurchaseOutcome:
        try:
            await workflow.execute_activity(
                collect_plan_purchase,
                start,
                start_to_close_timeout=timedelta(seconds=start.pending_timeout_s + 60),
                heartbeat_timeout=timedelta(seconds=30),
                retry_policy=COLLECT_RETRY,
            )
        except ActivityError:
            pass  # declined, or out of attempts: settle asks the provider what happened and voids what is open
        return await workflow.execute_activity(
            settle_plan_purchase, start, start_to_close_timeout=timedelta(seconds=60), retry_policy=SETTLE_RETRY
        )
