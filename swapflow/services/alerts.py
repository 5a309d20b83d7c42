"""Alerts: the alert evaluator's start (the one place that says how: one per namespace, by its id),
and the alerts and delivery log operators read."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy

from swapflow.db.cities import cabinet_city
from swapflow.db.network import Cabinet, Station
from swapflow.db.ops import Alert, AlertDelivery
from swapflow.domain.errors import NotFound
from swapflow.domain.ops import AlertStatus
from swapflow.settings import Settings
from swapflow.workflows.alert_evaluator import AlertEvaluatorWorkflow
from swapflow.workflows.alert_evaluator_contract import EVALUATOR_WORKFLOW_ID, EvaluatorInput


def evaluator_input(settings: Settings) -> EvaluatorInput:
    """The alert evaluator's loop, from the settings."""
    return EvaluatorInput(
        interval_s=settings.ops.evaluate_interval_s,
        per_run=settings.ops.evaluations_per_run,
        webhook_attempts=settings.ops.webhook_attempts,
    )


async def ensure_alert_evaluator(client: Client, settings: Settings) -> None:
    """Start the alert evaluator unless it runs already (one per namespace, by its id)."""
    await client.start_workflow(
        AlertEvaluatorWorkflow.run,
        evaluator_input(settings),
        id=EVALUATOR_WORKFLOW_ID,
        task_queue=settings.temporal.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )


async def alerts(
    session: AsyncSession, *, cities: list[str] | None, status: str, kind: str | None, limit: int
) -> list[tuple[Alert, str | None]]:
    """Alerts of `cities` (None: all, network-wide ones too) with their city, newest first: `open`,
    `resolved` or `all`, of one kind if named."""
    query = (
        select(Alert, Station.city_code)
        .outerjoin(Cabinet, Cabinet.id == Alert.cabinet_id)
        .outerjoin(Station, Station.id == Cabinet.station_id)
        .order_by(Alert.id.desc())
        .limit(limit)
    )
    if cities is not None:
        query = query.where(Station.city_code.in_(cities))
    if status != "all":
        query = query.where(Alert.status == AlertStatus(status))
    if kind:
        query = query.where(Alert.kind == kind)
    return list((await session.execute(query)).tuples())


async def find_alert(session: AsyncSession, alert_id: int) -> tuple[Alert, str | None]:
    """The alert and its cabinet's city (None: a network-wide alert), or NotFound."""
    alert = await session.get(Alert, alert_id)
    if alert is None:
        raise NotFound("alert", alert_id)
    return alert, await cabinet_city(session, alert.cabinet_id)


async def deliveries(session: AsyncSession, alert_id: int) -> list[AlertDelivery]:
    """Every attempt to push the alert to a channel, in order."""
    rows = await session.scalars(
        select(AlertDelivery).where(AlertDelivery.alert_id == alert_id).order_by(AlertDelivery.id)
    )
    return list(rows)
