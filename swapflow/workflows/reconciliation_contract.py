"""The daily reconciliation workflow's contract. No I/O."""

from __future__ import annotations

from datetime import date, datetime

from temporalio import activity

from swapflow.workflows.contract import Contract


class ReconcileInput(Contract):
    """Reconcile one UTC day; None: the day before the workflow's start."""

    day: date | None = None


class ReconcileProvider(Contract):
    day: date
    provider: str


class ProviderReconciliation(Contract):
    provider: str
    ours: int
    theirs: int
    matched: int
    exceptions: int


class ReconciliationReport(Contract):
    day: date
    providers: tuple[ProviderReconciliation, ...]
    ran_at: datetime | None = None


# ---------------------------------------------------------------------------------- activities
# The reconciliation's activities, by name and types: a workflow calls these, never the implementations
# the worker registers (swapflow.activities), so their I/O stays out of the sandbox.


@activity.defn(name="reconcile_day")
async def reconcile_day(request: ReconcileProvider) -> ReconciliationReport:
    """Compare a day's payments and refunds with the providers' statements."""
    raise NotImplementedError


def reconciliation_workflow_id(day: str) -> str:
    """Workflow id of a manual reconciliation of `day` (YYYY-MM-DD)."""
    return f"reconciliation/{day}"
