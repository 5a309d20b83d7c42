"""Reconciliation: the daily schedule that runs the reconciliation workflow."""

from __future__ import annotations

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
)

from swapflow.settings import Settings
from swapflow.workflows.reconciliation import ReconciliationWorkflow
from swapflow.workflows.reconciliation_contract import ReconcileInput

SCHEDULE_ID = "reconciliation-daily"


async def ensure_reconciliation_schedule(client: Client, settings: Settings) -> None:
    """Create the daily schedule unless it exists (every worker calls this on start: idempotent)."""
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            ReconciliationWorkflow.run,
            ReconcileInput(),
            id="reconciliation-daily-run",
            task_queue=settings.temporal.task_queue,
        ),
        spec=ScheduleSpec(cron_expressions=[settings.payments.reconciliation_cron]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    try:
        await client.create_schedule(SCHEDULE_ID, schedule)
    except ScheduleAlreadyRunningError:
        pass
