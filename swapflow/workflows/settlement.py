"""The settlement workflow, `settlement/<partner>/<period label>`: one partner's period, settled once.

Started by hand (`services/settlements.py` `start_settlement`) or, for each partner with a closed period
to settle, by `SettlementsDue`, which each cadence's Temporal Schedule starts. It
1. freezes the period: the period's accruals and the partner's pending clawbacks are assigned to the run,
   the statement computed and recorded (revision 1); nothing due ends the run (NOTHING_DUE; what is
   owed carries forward);
2. waits for finance (update `decide`), reminding it (an alert) every `remind_after_s` it waits. Four
   eyes: whoever prepared the run or a plan version it used may not approve it. A rejection waits for
   update `recompute` (after corrections), which freezes and computes again as the next revision;
3. pays the approved total under the attempt's key and follows the payout with durable timers until it
   is final (days, maybe); a bank transfer waits for finance's `bank_result`. Succeeded: booked (payable
   → cash) and PAID. Failed or returned: still owed, PAYOUT_FAILED with the reason and an alert; update
   `retry_payout` pays again as a new attempt (a new key; never twice under one).

Updates are answered with the run's state once the workflow has acted on them; one at a time.

History: each poll costs a timer, an activity and a workflow task (about 10 events), each reminder
about 6; a payout followed for a week at hourly polls stays under 2k events: no continue-as-new.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from swapflow.payments.payouts import PayoutStatus
    from swapflow.workflows.settlement_contract import (
        SETTLEMENT_BANK_RESULT_UPDATE,
        SETTLEMENT_DECIDE_UPDATE,
        SETTLEMENT_RECOMPUTE_UPDATE,
        SETTLEMENT_RETRY_PAYOUT_UPDATE,
        SETTLEMENT_STATE_QUERY,
        BankResult,
        BankResultRecord,
        DecisionRecord,
        DueRequest,
        DueResult,
        FreezeRequest,
        PayoutProgress,
        PayoutRef,
        Reminder,
        RunStatus,
        SettlementActor,
        SettlementConflictError,
        SettlementDecision,
        SettlementForbiddenError,
        SettlementInvalidError,
        SettlementRefusedError,
        SettlementStart,
        SettlementState,
        fail_settlement_payout,
        freeze_settlement,
        poll_settlement_payout,
        record_bank_result,
        record_settlement_decision,
        remind_settlement,
        settle_settlement_payout,
        settlement_workflow_id,
        settlements_due,
        submit_settlement_payout,
    )

# Money must move and runs must be recorded however long a provider or the database is away: retried
# without a bound, backing off to 5 minutes.
_UNBOUNDED = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(minutes=5),
    non_retryable_error_types=[SettlementRefusedError.TYPE],
)
MONEY_STEP: dict[str, Any] = {"start_to_close_timeout": timedelta(seconds=60), "retry_policy": _UNBOUNDED}
# A period of a busy partner is 100k accruals or more: a regular activity, given minutes.
FREEZE_STEP: dict[str, Any] = {"start_to_close_timeout": timedelta(minutes=10), "retry_policy": _UNBOUNDED}
# Short database steps, as local activities: two events each in the history.
RECORD_STEP: dict[str, Any] = {"start_to_close_timeout": timedelta(seconds=30), "retry_policy": _UNBOUNDED}

_FOLLOWED = frozenset({"submitted", PayoutStatus.PROCESSING.value})


@workflow.defn(name="Settlement")
class SettlementWorkflow:
    """One partner's period: frozen, computed, approved by finance, paid."""

    @workflow.init
    def __init__(self, start: SettlementStart) -> None:
        self._start = start
        self._state = SettlementState(run_id=start.run_id, status=RunStatus.COMPUTING, prepared_by=start.prepared_by)
        self._asked: SettlementActor | None = None  # the finance request being acted on (one at a time)
        self._answer = self._state

    # ---------------------------------------------------------------------------------- messages

    @workflow.query(name=SETTLEMENT_STATE_QUERY)
    def state(self) -> SettlementState:
        return self._state

    def _expect(self, *statuses: RunStatus) -> None:
        if self._asked is not None:
            raise SettlementConflictError(f"run {self._start.run_id} is acting on another request; ask again")
        if self._state.status not in statuses:
            waits = " or ".join(status.value for status in statuses)
            raise SettlementConflictError(f"run {self._start.run_id} is {self._state.status.value}, not {waits}")

    async def _ask(self, request: SettlementActor) -> SettlementState:
        self._asked = request
        await workflow.wait_condition(lambda: self._asked is None)
        return self._answer

    def _answered(self) -> None:
        if self._asked is not None:
            self._answer, self._asked = self._state, None

    @workflow.update(name=SETTLEMENT_DECIDE_UPDATE)
    async def decide(self, decision: SettlementDecision) -> SettlementState:
        """Finance approves (then the payout goes out) or rejects with a reason."""
        return await self._ask(decision)

    @decide.validator
    def _validate_decide(self, decision: SettlementDecision) -> None:
        self._expect(RunStatus.AWAITING_APPROVAL)
        if decision.approve and decision.by in (self._state.prepared_by, *self._state.plan_edited_by):
            raise SettlementForbiddenError(
                f"four eyes: {decision.by} prepared run {self._start.run_id} or a plan version it uses,"
                " so someone else approves it"
            )
        if not decision.approve and not decision.reason.strip():
            raise SettlementInvalidError("a rejection says why (reason)")

    @workflow.update(name=SETTLEMENT_RECOMPUTE_UPDATE)
    async def recompute(self, actor: SettlementActor) -> SettlementState:
        """After corrections: freeze and compute a rejected run again, as its next revision."""
        return await self._ask(actor)

    @recompute.validator
    def _validate_recompute(self, actor: SettlementActor) -> None:
        self._expect(RunStatus.REJECTED)

    @workflow.update(name=SETTLEMENT_RETRY_PAYOUT_UPDATE)
    async def retry_payout(self, actor: SettlementActor) -> SettlementState:
        """Pay a run whose payout failed again, as a new payout."""
        return await self._ask(actor)

    @retry_payout.validator
    def _validate_retry_payout(self, actor: SettlementActor) -> None:
        self._expect(RunStatus.PAYOUT_FAILED)

    @workflow.update(name=SETTLEMENT_BANK_RESULT_UPDATE)
    async def bank_result(self, result: BankResult) -> SettlementState:
        """How a bank transfer ended: paid (with the bank's reference) or returned."""
        return await self._ask(result)

    @bank_result.validator
    def _validate_bank_result(self, result: BankResult) -> None:
        self._expect(RunStatus.PAYING)
        if self._state.payout_status != PayoutStatus.AWAITING_BANK:
            raise SettlementConflictError(f"run {self._start.run_id}'s payout is no bank transfer awaiting its result")

    # ---------------------------------------------------------------------------------- the run

    def _set(self, **changes: Any) -> None:
        self._state = self._state.model_copy(update=changes)

    async def _request(self) -> SettlementActor:
        await workflow.wait_condition(lambda: self._asked is not None)
        assert self._asked is not None
        return self._asked

    @workflow.run
    async def run(self, start: SettlementStart) -> SettlementState:
        """Freeze and compute, wait for approval, pay."""
        await self._compute(1, start.prepared_by)
        while self._state.status == RunStatus.AWAITING_APPROVAL:
            decision = await self._approval()
            record = DecisionRecord(run_id=start.run_id, revision=self._state.revision, decision=decision)
            await workflow.execute_local_activity(record_settlement_decision, record, **RECORD_STEP)
            if decision.approve:
                self._set(status=RunStatus.APPROVED)
                self._answered()
                break
            self._set(status=RunStatus.REJECTED, failure_reason=decision.reason)
            self._answered()
            actor = await self._request()
            await self._compute(self._state.revision + 1, actor.by)
            self._answered()
        if self._state.status == RunStatus.APPROVED:
            await self._pay()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._state

    async def _compute(self, revision: int, by: str) -> None:
        request = FreezeRequest(start=self._start, revision=revision, by=by)
        computed: SettlementState = await workflow.execute_activity(freeze_settlement, request, **FREEZE_STEP)
        self._state = computed

    async def _approval(self) -> SettlementDecision:
        """Finance's decision; every `remind_after_s` without one, a reminder."""
        reminders = 0
        while True:
            try:
                await workflow.wait_condition(
                    lambda: self._asked is not None, timeout=timedelta(seconds=self._start.remind_after_s)
                )
                break
            except TimeoutError:
                reminders += 1
                reminder = Reminder(
                    run_id=self._start.run_id,
                    partner_id=self._start.partner_id,
                    period_label=self._start.period_label,
                    waited_s=reminders * self._start.remind_after_s,
                    number=reminders,
                )
                await workflow.execute_local_activity(remind_settlement, reminder, **RECORD_STEP)
        assert isinstance(self._asked, SettlementDecision)
        return self._asked

    async def _pay(self) -> None:
        """Pay until a payout succeeds; after a failure, again once finance asks."""
        attempt, by = 1, ""
        while True:
            ref = PayoutRef(run_id=self._start.run_id, attempt=attempt, by=by)
            self._set(status=RunStatus.PAYING, payout_attempt=attempt, payout_status=None, failure_reason=None)
            progress = await self._follow(ref)
            if progress.status == PayoutStatus.AWAITING_BANK:
                result = await self._request()
                assert isinstance(result, BankResult)
                record = BankResultRecord(run_id=ref.run_id, attempt=attempt, result=result)
                progress = await self._payout_step(record_bank_result, record, local=True)
            if progress.status == PayoutStatus.SUCCEEDED:
                await workflow.execute_local_activity(settle_settlement_payout, ref, **RECORD_STEP)
                self._set(status=RunStatus.PAID)
                self._answered()
                return
            await workflow.execute_local_activity(fail_settlement_payout, ref, **RECORD_STEP)
            self._set(status=RunStatus.PAYOUT_FAILED, failure_reason=progress.failure_reason)
            self._answered()
            by = (await self._request()).by
            attempt += 1

    async def _follow(self, ref: PayoutRef) -> PayoutProgress:
        """Submit the payout, then poll it on the schedule (its last wait repeating) until it is final or
        waits for the bank. A retry's request is answered once the new payout is out."""
        progress = await self._payout_step(submit_settlement_payout, ref)
        self._answered()
        schedule = self._start.payout_poll_schedule_s
        polls = 0
        while progress.status in _FOLLOWED:
            await workflow.sleep(timedelta(seconds=schedule[min(polls, len(schedule) - 1)]))
            polls += 1
            progress = await self._payout_step(poll_settlement_payout, ref)
        return progress

    async def _payout_step(
        self, step: Callable[[Any], Awaitable[PayoutProgress]], arg: Any, *, local: bool = False
    ) -> PayoutProgress:
        progress: PayoutProgress
        if local:
            progress = await workflow.execute_local_activity(step, arg, **RECORD_STEP)
        else:
            progress = await workflow.execute_activity(step, arg, **MONEY_STEP)
        self._set(payout_status=progress.status)
        return progress


@workflow.defn(name="SettlementsDue")
class SettlementsDueWorkflow:
    """A cadence's schedule tick: starts the settlement of each partner with a closed period to settle
    (as children that outlive it; one already started is left as it is)."""

    @workflow.run
    async def run(self, request: DueRequest) -> DueResult:
        starts: list[SettlementStart] = await workflow.execute_activity(
            settlements_due,
            request,
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30), maximum_attempts=10),
        )
        results = await asyncio.gather(*(self._start(start) for start in starts))
        return DueResult(
            started=tuple(wid for wid, new in results if new), running=tuple(wid for wid, new in results if not new)
        )

    async def _start(self, start: SettlementStart) -> tuple[str, bool]:
        workflow_id = settlement_workflow_id(start.partner_id, start.period_label)
        try:
            await workflow.start_child_workflow(
                SettlementWorkflow.run,
                start,
                id=workflow_id,
                parent_close_policy=ParentClosePolicy.ABANDON,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            )
        except WorkflowAlreadyStartedError:
            return workflow_id, False
        return workflow_id, True
