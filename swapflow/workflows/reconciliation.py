"""The daily reconciliation workflow, run by a Temporal Schedule: yesterday's payments and refunds of
every provider compared with the provider's statement; differences filed for finance."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from swapflow.workflows.reconciliation_contract import (
        ReconcileInput,
        ReconcileProvider,
        ReconciliationReport,
        reconcile_day,
    )


@workflow.defn(name="Reconciliation")
class ReconciliationWorkflow:
    """Reconcile one UTC day (by default the day before the run) with every provider."""

    @workflow.run
    async def run(self, request: ReconcileInput) -> ReconciliationReport:
        """Compare and file the differences."""
        day = request.day or (workflow.now() - timedelta(days=1)).date()
        return await workflow.execute_activity(
            reconcile_day,
            ReconcileProvider(day=day, provider="*"),
            start_to_close_timeout=timedelta(minutes=10),
            retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=5), maximum_attempts=20),
        )
