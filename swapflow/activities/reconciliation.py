"""The reconciliation workflow's activity: swapflow.services.reconciliation compares each provider's day."""

from __future__ import annotations

from temporalio import activity

from swapflow.db.engine import Database
from swapflow.payments.provider import PaymentMethod, PaymentProvider
from swapflow.services.reconciliation import reconcile_provider
from swapflow.workflows.reconciliation_contract import ReconcileProvider, ReconciliationReport


class ReconciliationActivities:
    """The reconciliation workflow's activity; one instance per worker."""

    def __init__(self, db: Database, providers: dict[PaymentMethod, PaymentProvider]) -> None:
        self.db = db
        self.providers = providers

    @activity.defn(name="reconcile_day")
    async def reconcile(self, request: ReconcileProvider) -> ReconciliationReport:
        """Reconcile `request.day` with every provider (`request.provider` "*") or one."""
        chosen = [p for m, p in self.providers.items() if request.provider in ("*", m.value)]
        results = [await reconcile_provider(self.db, provider, request.day) for provider in chosen]
        return ReconciliationReport(day=request.day, providers=tuple(results))
