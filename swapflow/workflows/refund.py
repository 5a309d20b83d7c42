"""The refund workflow, `refund/<refund id>`: gives money back and follows it until it has landed.

Started by a failed swap's compensation (id `swap-<order id>`: one failure can only ever open one
refund), by an operator, or by an approved rider complaint. It submits the refund under its key, then
follows it with durable timers until it is final:
- PROCESSING → SUCCEEDED: settled in the ledger, done;
- CLOSED (WeChat: e.g. the merchant balance was short): resubmitted with a new refund number;
- ABNORMAL (WeChat), FAILED (Stripe), refused, or closed too often: escalated to finance.
Polls back off (1 min, 5, 10, 20, 30, 30, ...) and a verified provider notification (signal) wakes the
workflow early; duplicate or stale notifications change nothing, since the provider's state is always
re-read by an activity before anything is decided.

History: each poll costs a timer, an activity and a workflow task (about 10 events); a 3-day follow
at 30-minute polls is about 150 polls, 1.5k events: far below the limits, so no continue-as-new.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from swapflow.domain.refunds import RefundState
    from swapflow.payments.provider import REFUND_NOTIFICATION_SIGNAL, ProviderRefund, RefundStatus
    from swapflow.workflows.refund_contract import (
        REFUND_DECLINED,
        RefundOutcome,
        RefundProgress,
        RefundRef,
        RefundRefusedError,
        RefundStart,
        RefundUpdate,
        escalate_refund,
        poll_refund,
        prepare_refund,
        settle_refund,
        submit_refund,
    )

# Money must move, however long a provider is down: retried without a bound, backing off to 5 minutes.
MONEY_STEP: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=60),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(seconds=1),
        maximum_interval=timedelta(minutes=5),
        non_retryable_error_types=[RefundRefusedError.TYPE],
    ),
}

ESCALATING = frozenset({RefundStatus.ABNORMAL.value, RefundStatus.FAILED.value, REFUND_DECLINED})


@workflow.defn(name="Refund")
class RefundWorkflow:
    """One refund, from submission until the money is back with the rider (or finance has it)."""

    @workflow.init
    def __init__(self, start: RefundStart) -> None:
        self._start = start
        self._state = RefundState.REQUESTED.value
        self._key: str | None = None
        self._attempt = 1
        self._polls = 0
        self._notified: dict[str, str] = {}  # submission key → latest status a notification reported

    @workflow.signal(name=REFUND_NOTIFICATION_SIGNAL)
    def provider_notification(self, refund: ProviderRefund) -> None:
        """A verified provider notification: wakes the follow-up early (the state is re-read anyway)."""
        self._notified[refund.key] = refund.status.value

    @workflow.query(name="progress")
    def progress(self) -> RefundProgress:
        """Where the refund is."""
        return RefundProgress(
            refund_id=self._start.refund_id, state=self._state, key=self._key, attempt=self._attempt, polls=self._polls
        )

    @workflow.run
    async def run(self, start: RefundStart) -> RefundOutcome:
        """Submit the refund and follow it until it is final."""
        plan = await workflow.execute_activity(prepare_refund, start, **MONEY_STEP)
        if plan is None:
            self._state = "nothing_to_refund"
            return RefundOutcome(refund_id=start.refund_id, state=self._state)
        self._attempt = plan.attempt
        ref = RefundRef(refund_id=plan.refund_id, expected_days=start.expected_days, attempt=plan.attempt)
        update = await self._do(submit_refund, ref)
        waits = 0
        while True:
            status = update.provider_status
            if status == RefundStatus.SUCCEEDED:
                update = await self._do(settle_refund, ref)
                break
            if status in ESCALATING or (status == RefundStatus.CLOSED and ref.attempt >= start.max_submissions):
                update = await self._do(escalate_refund, ref)
                break
            if status == RefundStatus.CLOSED:
                ref = ref.model_copy(update={"attempt": ref.attempt + 1})
                update = await self._do(submit_refund, ref)
                waits = 0
                continue
            await self._wait(start.poll_schedule_s[min(waits, len(start.poll_schedule_s) - 1)], update.key)
            waits += 1
            self._polls += 1
            update = await self._do(poll_refund, ref)
        return RefundOutcome(
            refund_id=plan.refund_id,
            state=update.state,
            amount_minor=plan.amount_minor,
            attempts=update.attempt,
            polls=self._polls,
        )

    async def _do(self, step: Any, ref: RefundRef) -> RefundUpdate:
        update: RefundUpdate = await workflow.execute_activity(step, ref, **MONEY_STEP)
        self._state, self._key, self._attempt = update.state, update.key, update.attempt
        return update

    async def _wait(self, seconds: float, key: str) -> None:
        """Until the next poll is due, or a notification says the submission `key` has moved on."""
        try:
            await workflow.wait_condition(
                lambda: self._notified.get(key, RefundStatus.PROCESSING.value) != RefundStatus.PROCESSING.value,
                timeout=timedelta(seconds=seconds),
            )
        except TimeoutError:
            pass
        # Consumed: a notification the provider's state does not bear out yet wakes the workflow once.
        self._notified.pop(key, None)
