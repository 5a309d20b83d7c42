"""The alert evaluator, `ops/alert-evaluator`: one long-lived workflow that runs the alert rules every
few seconds, pushes new and resolved alerts to the channels, and starts a work-order workflow for each
new work order. A workflow rather than a loop in some process: it survives restarts of any process,
exactly one runs (its id), and every round is visible in its history and in Temporal's UI. It
continues-as-new after a bounded number of rounds to keep its history small."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from swapflow.workflows.alert_evaluator_contract import (
        AlertDeliveryRequest,
        EvaluateInput,
        EvaluatorInput,
        deliver_alert,
        evaluate_alert_rules,
    )
    from swapflow.workflows.work_order import WorkOrderWorkflow
    from swapflow.workflows.work_order_contract import WorkOrderInput, work_order_workflow_id


@workflow.defn(name="AlertEvaluator")
class AlertEvaluatorWorkflow:
    """Evaluate the alert rules forever, one round every `interval_s`."""

    @workflow.run
    async def run(self, request: EvaluatorInput) -> None:
        for round_no in range(request.per_run):
            evaluation = await workflow.execute_activity(
                evaluate_alert_rules,
                EvaluateInput(round=round_no),
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)),
            )
            for order in evaluation.work_orders:
                await self._start_work_order(order)
            await asyncio.gather(*(self._deliver(d, request.webhook_attempts) for d in evaluation.deliveries))
            await workflow.sleep(timedelta(seconds=request.interval_s))
        workflow.continue_as_new(request)

    async def _start_work_order(self, order: WorkOrderInput) -> None:
        try:
            await workflow.start_child_workflow(
                WorkOrderWorkflow.run,
                order,
                id=work_order_workflow_id(order.work_order_id),
                # A work order outlives this round, and this run of the evaluator.
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
            )
        except WorkflowAlreadyStartedError:
            pass  # started by an earlier round (or by the API) before its row left `new`

    async def _deliver(self, delivery: AlertDeliveryRequest, attempts: int) -> None:
        try:
            await workflow.execute_activity(
                deliver_alert,
                delivery,
                start_to_close_timeout=timedelta(seconds=20),
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=1),
                    backoff_coefficient=2.0,
                    maximum_interval=timedelta(seconds=30),
                    maximum_attempts=attempts,
                ),
            )
        except ActivityError:
            workflow.logger.warning(
                "alert %s (%s) not delivered to %s", delivery.alert_id, delivery.event, delivery.channel
            )
