"""The plan purchase workflow's contract. No I/O."""

from __future__ import annotations

from temporalio import activity

from swapflow.domain import timing
from swapflow.workflows.contract import Contract


class PlanPurchaseStart(Contract):
    """Input of workflow `plan_purchase/<purchase_id>`."""

    purchase_id: str
    pending_timeout_s: float = timing.PAYMENT_PENDING_TIMEOUT_S


class PlanPurchaseOutcome(Contract):
    """How a purchase ended: `succeeded` (the plan runs) or `failed` (nothing taken, no plan)."""

    purchase_id: str
    status: str
    plan_id: str
    amount_minor: int = 0
    reason: str | None = None


# ---------------------------------------------------------------------------------- activities
# The purchase's activities, by name and types: a workflow calls these, never the implementations
# the worker registers (swapflow.activities), so their I/O stays out of the sandbox.


@activity.defn(name="collect_plan_purchase")
async def collect_plan_purchase(start: PlanPurchaseStart) -> None:
    """Collect a plan purchase's payment through the rider's provider (or PaymentDeclinedError)."""
    raise NotImplementedError


@activity.defn(name="settle_plan_purchase")
async def settle_plan_purchase(start: PlanPurchaseStart) -> PlanPurchaseOutcome:
    """Start or extend the plan if the provider captured the money; else void the payment."""
    raise NotImplementedError


def plan_purchase_workflow_id(purchase_id: str) -> str:
    """The workflow that collects plan purchase `purchase_id` and starts the plan once the provider confirms."""
    return f"plan_purchase/{purchase_id}"
