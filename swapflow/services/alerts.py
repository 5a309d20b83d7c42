"""Alerts: the alert evaluator's start (the one place that says how: one per namespace, by its id),
the alerts and delivery log operators read, and what a person does with an alert: acknowledge it (they
are on it) and resolve it by hand. Both are audited. A rule's alert resolved while its condition still
holds is opened again by the evaluator's next round: resolving says the problem is gone, not hidden."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy

from swapflow.db.cities import cabinet_city
from swapflow.db.network import Cabinet, Station
from swapflow.db.ops import Alert, AlertDelivery
from swapflow.domain.clock import utcnow
from swapflow.domain.errors import Conflict, NotFound
from swapflow.domain.ops import AlertStatus
from swapflow.services.audit import record_change, snapshot
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


async def _open_alert(session: AsyncSession, alert_id: int) -> Alert:
    alert = await session.get(Alert, alert_id, with_for_update=True)
    if alert is None:
        raise NotFound("alert", alert_id)
    if alert.status == AlertStatus.RESOLVED:
        raise Conflict("Alert resolved", f"alert {alert_id} was resolved by {alert.resolved_by or 'its rule'}")
    return alert


async def acknowledge_alert(session: AsyncSession, alert_id: int, *, actor: str) -> Alert:
    """`actor` takes the open alert on: who and when are recorded (and audited). Conflict if it is
    resolved or someone acknowledged it already (the first acknowledgement stands)."""
    alert = await _open_alert(session, alert_id)
    if alert.acknowledged_at is not None:
        raise Conflict("Already acknowledged", f"alert {alert_id} was acknowledged by {alert.acknowledged_by}")
    before = snapshot(alert)
    alert.acknowledged_at, alert.acknowledged_by = utcnow(), actor
    await session.flush()
    record_change(session, actor, "acknowledge", "alert", str(alert.id), before, snapshot(alert))
    return alert


async def resolve_alert(session: AsyncSession, alert_id: int, *, actor: str, note: str = "") -> Alert:
    """`actor` says the open alert's problem is gone, and how in `note` (audited); an alert nobody
    acknowledged counts as acknowledged then. Conflict if it is resolved already."""
    alert = await _open_alert(session, alert_id)
    before = snapshot(alert)
    now = utcnow()
    if alert.acknowledged_at is None:
        alert.acknowledged_at, alert.acknowledged_by = now, actor
    alert.status, alert.resolved_at, alert.resolved_by = AlertStatus.RESOLVED, now, actor
    await session.flush()
    record_change(session, actor, "resolve", "alert", str(alert.id), before, snapshot(alert), note)
    return alert
