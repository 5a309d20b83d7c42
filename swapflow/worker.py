"""The Temporal worker process: runs the workflows and their activities on the swapflow task queue."""

from __future__ import annotations

import asyncio
import inspect
import logging
import py_compile
from collections.abc import Sequence
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from swapflow.activities.alert_evaluator import AlertEvaluatorActivities
from swapflow.activities.device_commands import DeviceCommands
from swapflow.activities.payments import PaymentActivities
from swapflow.activities.plan_purchase import PlanPurchaseActivities
from swapflow.activities.reconciliation import ReconciliationActivities
from swapflow.activities.refund import RefundActivities
from swapflow.activities.reservation import ReservationActivities
from swapflow.activities.settlement import SettlementActivities
from swapflow.activities.swap import SwapRecords
from swapflow.activities.topup import TopUpActivities
from swapflow.activities.work_order import WorkOrderActivities
from swapflow.db.engine import Database
from swapflow.device_commands.queue import CommandQueue
from swapflow.infra.temporal import connect_temporal
from swapflow.payments.registry import payout_providers_from_settings, providers_from_settings
from swapflow.services.alerts import ensure_alert_evaluator
from swapflow.services.reconciliation import ensure_reconciliation_schedule
from swapflow.services.settlements import ensure_settlement_schedules, minute_cadences_in_use
from swapflow.settings import Settings
from swapflow.workflows.alert_evaluator import AlertEvaluatorWorkflow
from swapflow.workflows.plan_purchase import PlanPurchaseWorkflow
from swapflow.workflows.reconciliation import ReconciliationWorkflow
from swapflow.workflows.refund import RefundWorkflow
from swapflow.workflows.reservation import ReservationWorkflow
from swapflow.workflows.settlement import SettlementsDueWorkflow, SettlementWorkflow
from swapflow.workflows.swap import SwapWorkflow
from swapflow.workflows.topup import TopUpWorkflow
from swapflow.workflows.work_order import WorkOrderWorkflow

log = logging.getLogger(__name__)

WORKFLOWS: Sequence[type] = (
    SwapWorkflow,
    RefundWorkflow,
    ReconciliationWorkflow,
    WorkOrderWorkflow,
    AlertEvaluatorWorkflow,
    TopUpWorkflow,
    SettlementWorkflow,
    SettlementsDueWorkflow,
    ReservationWorkflow,
    PlanPurchaseWorkflow,
)


def build_activities(settings: Settings, db: Database, commands_out: CommandQueue) -> list[Any]:
    """Every activity the workflows call, bound to this process's database and broker connection."""
    records = SwapRecords(db, settings)
    providers = providers_from_settings(settings, db)
    payments = PaymentActivities(db, providers, settings)
    refunds = RefundActivities(db, providers)
    top_ups = TopUpActivities(db, payments)
    plan_purchases = PlanPurchaseActivities(db, payments)
    reconciliation = ReconciliationActivities(db, providers)
    commands = DeviceCommands(db, commands_out)
    alerting = AlertEvaluatorActivities(db, settings)
    work_orders = WorkOrderActivities(db, settings)
    settlements = SettlementActivities(db, settings, payout_providers_from_settings(settings, db))
    reservations = ReservationActivities(db, settings)
    return [
        records.admit,
        records.record_stage,
        records.accept_return,
        records.replace_slot,
        records.report_fault,
        records.finish,
        payments.charge,
        refunds.prepare,
        refunds.submit,
        refunds.poll,
        refunds.settle,
        refunds.escalate,
        reconciliation.reconcile,
        commands.send,
        records.release_coupon,
        alerting.evaluate,
        alerting.deliver,
        work_orders.record_step,
        work_orders.dispatch,
        work_orders.escalate,
        work_orders.check_live,
        work_orders.close,
        top_ups.collect,
        top_ups.settle,
        *settlements.activities(),
        reservations.end,
        plan_purchases.collect,
        plan_purchases.settle,
    ]


def cache_workflow_bytecode() -> None:
    """Write the bytecode of the workflow modules. The sandbox imports a workflow's module afresh for
    every workflow it starts; without a cached .pyc (PYTHONDONTWRITEBYTECODE, or a checkout never
    imported with bytecode on) each of those imports compiles the source again, which was the largest
    single cost of the worker under load (about 12% of its CPU)."""
    for workflow_class in WORKFLOWS:
        source = inspect.getfile(workflow_class)
        try:
            py_compile.compile(source, doraise=True)
        except (OSError, py_compile.PyCompileError) as exc:  # a read-only install: slower, not broken
            log.warning("could not cache the bytecode of %s: %s", source, exc)


def build_worker(client: Client, settings: Settings, db: Database, commands_out: CommandQueue) -> Worker:
    """A worker for the swapflow task queue."""
    return Worker(
        client,
        task_queue=settings.temporal.task_queue,
        workflows=list(WORKFLOWS),
        activities=build_activities(settings, db, commands_out),
        max_concurrent_activities=200,
        max_concurrent_local_activities=200,
        max_concurrent_workflow_tasks=200,
    )


async def run_worker(settings: Settings) -> None:
    """Run the worker until cancelled."""
    cache_workflow_bytecode()
    db = Database(settings.effective_database_url)
    commands_out = CommandQueue(settings, name="swapflow-worker")
    publisher_task = asyncio.create_task(commands_out.run())
    try:
        client = await connect_temporal(settings)
        if settings.payments.reconciliation_schedule:
            await ensure_reconciliation_schedule(client, settings)
        if settings.settlement.schedules:
            await ensure_settlement_schedules(client, settings, await minute_cadences_in_use(db))
        worker = build_worker(client, settings, db, commands_out)
        await ensure_alert_evaluator(client, settings)
        log.info("worker polling %s on %s", settings.temporal.task_queue, settings.temporal.effective_address)
        await worker.run()
    finally:
        publisher_task.cancel()
        await db.dispose()
