"""The top-up workflow, `topup/<top-up id>`: a rider's wallet top-up, from payment to credit.

Started by `POST /v1/riders/{id}/wallet/top-ups` once the top-up and our payment record are written. It
collects the payment through the rider's provider (a pending payment is polled, heartbeating, until the
rider confirms it or its deadline), then settles: the wallet is credited only if the provider says the
money was captured; whatever is still open at the provider is voided, and the top-up ends failed with
nothing taken. The settle step asks the provider itself, so a collect that failed or lost its answer
never decides the outcome.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from swapflow.workflows.swap_contract import PaymentDeclinedError
    from swapflow.workflows.topup_contract import TopUpOutcome, TopUpStart, collect_top_up, settle_top_up

COLLECT_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=12,
    non_retryable_error_types=[PaymentDeclinedError.TYPE],
)
# Money that moved must be credited, however long the database is away: retried without a bound.
SETTLE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=5))


@workflow.defn(name="TopUp")
class TopUpWorkflow:
    """One top-up: collected, then credited or voided."""

    @workflow.run
    async def run(self, start: TopUpStart) -> TopUpOutcome:
        try:
            await workflow.execute_activity(
                collect_top_up,
                start,
                start_to_close_timeout=timedelta(seconds=start.pending_timeout_s + 60),
                heartbeat_timeout=timedelta(seconds=30),
                retry_policy=COLLECT_RETRY,
            )
        except ActivityError:
            pass  # declined, or out of attempts: settle asks the provider what happened and voids what is open
        return await workflow.execute_activity(
            settle_top_up, start, start_to_close_timeout=timedelta(seconds=60), retry_policy=SETTLE_RETRY
        )
