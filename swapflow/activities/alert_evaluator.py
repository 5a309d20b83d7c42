"""The alert evaluator's activities: one round of the alert rules (which also opens the work orders
that alerts call for) and the alerts' deliveries to their channels. Each is idempotent."""

from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity
from temporalio.exceptions import ApplicationError

from swapflow.db.cities import cabinet_city
from swapflow.db.engine import Database
from swapflow.db.network import Cabinet
from swapflow.db.ops import Alert, AlertDelivery, WorkOrder
from swapflow.domain.checks import present
from swapflow.domain.clock import utcnow
from swapflow.domain.ops import AlertStatus, WorkOrderStatus
from swapflow.ops.alert_rules import apply_conditions, current_conditions
from swapflow.ops.channels import alert_document, post_signed, render_body
from swapflow.services.work_orders import new_work_order, open_work_order_for, work_order_input
from swapflow.settings import Settings
from swapflow.workflows.alert_evaluator_contract import AlertDeliveryRequest, EvaluateInput, Evaluation

_DELIVERY_LOOKBACK = timedelta(hours=24)
_DELIVERIES_PER_ROUND = 100


class AlertEvaluatorActivities:
    """The evaluator's steps bound to this worker's database and settings."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    @activity.defn(name="evaluate_alert_rules")
    async def evaluate(self, request: EvaluateInput) -> Evaluation:
        """One round: open and resolve alerts from the live state, open work orders for the alerts that
        need a person, and list what is to be delivered and started."""
        now = utcnow()
        async with self.db.transaction() as session:
            conditions = await current_conditions(session, self.settings, now)
            opened, resolved = await apply_conditions(session, conditions)
            await self._work_orders_for_alerts(session)
            new_orders = (
                (
                    await session.execute(
                        select(WorkOrder, Cabinet.capability)
                        .join(Cabinet, Cabinet.id == WorkOrder.cabinet_id)
                        .where(WorkOrder.status == WorkOrderStatus.NEW)
                    )
                )
                .tuples()
                .all()
            )
            deliveries = await self._pending_deliveries(session)
        return Evaluation(
            opened=len(opened),
            resolved=len(resolved),
            deliveries=tuple(deliveries),
            work_orders=tuple(work_order_input(self.settings, o, c) for o, c in new_orders),
        )

    async def _work_orders_for_alerts(self, session: AsyncSession) -> None:
        """A work order for each open alert of a kind that needs a person, unless the alert already has
        one or its cabinet and slot already have an open one."""
        covered = select(WorkOrder.alert_id).where(WorkOrder.alert_id.is_not(None))
        alerts = await session.scalars(
            select(Alert)
            .where(
                Alert.status == AlertStatus.OPEN,
                Alert.kind.in_(self.settings.ops.work_order_kinds),
                Alert.cabinet_id.is_not(None),
                Alert.id.not_in(covered),
            )
            .order_by(Alert.id)
        )
        for alert in alerts:
            cabinet_id = present(alert.cabinet_id, f"cabinet of alert {alert.id}")  # selected where not null
            if await open_work_order_for(session, cabinet_id, alert.slot_no) is not None:
                continue
            await new_work_order(
                session,
                cabinet_id=cabinet_id,
                slot_no=alert.slot_no,
                kind=alert.kind,
                severity=alert.severity,
                source="swap" if alert.order_id else "alert",
                description=alert.message,
                alert_id=alert.id,
            )

    async def _pending_deliveries(self, session: AsyncSession) -> list[AlertDeliveryRequest]:
        if not self.settings.ops.webhooks:
            return []
        since = utcnow() - _DELIVERY_LOOKBACK
        attempted = {
            (d.alert_id, d.event, d.channel)
            for d in await session.scalars(select(AlertDelivery).where(AlertDelivery.at >= since - _DELIVERY_LOOKBACK))
        }
        alerts = await session.scalars(
            select(Alert).where((Alert.created_at >= since) | (Alert.resolved_at >= since)).order_by(Alert.id)
        )
        pending = []
        for alert in alerts:
            events = ["opened"] + (["resolved"] if alert.status == AlertStatus.RESOLVED else [])
            for event in events:
                for channel in self.settings.ops.webhooks:
                    if (alert.id, event, channel.name) not in attempted:
                        pending.append(AlertDeliveryRequest(alert_id=alert.id, event=event, channel=channel.name))
        return pending[:_DELIVERIES_PER_ROUND]

    @activity.defn(name="deliver_alert")
    async def deliver(self, request: AlertDeliveryRequest) -> None:
        """POST one alert event to one channel, signed; each attempt is logged. A failure raises, and
        Temporal retries with backoff up to the evaluator's bound."""
        channel = next((c for c in self.settings.ops.webhooks if c.name == request.channel), None)
        if channel is None:
            return  # the channel was removed from the settings since
        async with self.db.sessions() as session:
            alert = await session.get(Alert, request.alert_id)
            if alert is None:
                return
            city = await cabinet_city(session, alert.cabinet_id)
            body = render_body(channel, alert_document(alert, request.event, city))
        attempt = activity.info().attempt
        status_code: int | None = None
        error: str | None = None
        try:
            async with httpx.AsyncClient(timeout=10.0) as http:
                response = await post_signed(http, channel, body, request.event, str(int(utcnow().timestamp())))
            status_code = response.status_code
            if status_code >= 300:
                error = f"HTTP {status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
        async with self.db.transaction() as session:
            exists = await session.scalar(
                select(AlertDelivery.id).where(
                    AlertDelivery.alert_id == request.alert_id,
                    AlertDelivery.event == request.event,
                    AlertDelivery.channel == request.channel,
                    AlertDelivery.attempt == attempt,
                )
            )
            if exists is None:
                session.add(
                    AlertDelivery(
                        alert_id=request.alert_id,
                        event=request.event,
                        channel=request.channel,
                        attempt=attempt,
                        ok=error is None,
                        status_code=status_code,
                        error=error,
                    )
                )
        if error is not None:
            raise ApplicationError(f"delivery to {channel.name} failed: {error}")
