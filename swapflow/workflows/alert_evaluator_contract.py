"""The alert evaluator's contract: its input, its activities' arguments and results. No I/O."""

from __future__ import annotations

from temporalio import activity

from swapflow.domain import timing
from swapflow.workflows.contract import Contract
from swapflow.workflows.work_order_contract import WorkOrderInput

EVALUATOR_WORKFLOW_ID = "ops/alert-evaluator"


class EvaluatorInput(Contract):
    """The evaluator's loop: evaluate every `interval_s`, continue-as-new after `per_run` rounds."""

    interval_s: float = timing.OPS_EVALUATE_INTERVAL_S
    per_run: int = timing.OPS_EVALUATIONS_PER_RUN
    webhook_attempts: int = timing.OPS_WEBHOOK_ATTEMPTS


class EvaluateInput(Contract):
    round: int


class AlertDeliveryRequest(Contract):
    """Push one alert event (opened | resolved) to one channel."""

    alert_id: int
    event: str
    channel: str


class Evaluation(Contract):
    """What one round of the alert rules did, and what the evaluator must do next."""

    opened: int = 0
    resolved: int = 0
    deliveries: tuple[AlertDeliveryRequest, ...] = ()
    work_orders: tuple[WorkOrderInput, ...] = ()


# ---------------------------------------------------------------------------------- activities
# The evaluator's activities, by name and types: the workflow calls these, never the implementations
# the worker registers (swapflow.activities.alert_evaluator), so their I/O stays out of the sandbox.


@activity.defn(name="evaluate_alert_rules")
async def evaluate_alert_rules(request: EvaluateInput) -> Evaluation:
    """Run one round of the alert rules."""
    raise NotImplementedError


@activity.defn(name="deliver_alert")
async def deliver_alert(request: AlertDeliveryRequest) -> None:
    """Post one alert to one webhook channel."""
    raise NotImplementedError
