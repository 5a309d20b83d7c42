"""The wallet top-up workflow's contract. No I/O."""

from __future__ import annotations

from temporalio import activity

from swapflow.domain import timing
from swapflow.workflows.contract import Contract


class TopUpStart(Contract):
    """Input of workflow `topup/<top_up_id>`."""

    top_up_id: str
    pending_timeout_s: float = timing.PAYMENT_PENDING_TIMEOUT_S


class TopUpOutcome(Contract):
    """How a top-up ended: `succeeded` (credited) or `failed` (nothing taken, nothing credited)."""

    top_up_id: str
    status: str
    amount_minor: int = 0
    reason: str | None = None


# ---------------------------------------------------------------------------------- activities
# The top-up's activities, by name and types: a workflow calls these, never the implementations
# the worker registers (swapflow.activities), so their I/O stays out of the sandbox.


@activity.defn(name="collect_top_up")
async def collect_top_up(start: TopUpStart) -> None:
    """Collect a top-up's payment through the rider's provider (or PaymentDeclinedError)."""
    raise NotImplementedError


@activity.defn(name="settle_top_up")
async def settle_top_up(start: TopUpStart) -> TopUpOutcome:
    """Credit the wallet if the provider captured the money; else void the payment."""
    raise NotImplementedError


def top_up_workflow_id(top_up_id: str) -> str:
    """The workflow that collects top-up `top_up_id` and credits it once the provider confirms."""
    return f"topup/{top_up_id}"
