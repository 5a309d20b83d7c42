"""The audit trail: each change to partners, plans, assignments, attributions and finance's resolutions
is recorded with who made it, when, and the record before and after, in the transaction of the change
(so there is no change without its record, and no record of a change that was rolled back)."""

from __future__ import annotations

import copy
from datetime import date, datetime
from typing import Any

from sqlalchemy import inspect, select
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.audit import AuditEvent
from swapflow.db.base import Base
from swapflow.db.commissions import Partner, PlanAssignment
from swapflow.db.money import Refund
from swapflow.db.network import City, Rider, Station


def _json(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return copy.deepcopy(value)  # a JSON column's list or dict: later changes to the row must not reach it


def snapshot(row: Base | None) -> dict[str, Any] | None:
    """A row's column values as JSON (None for no row: before a create, after a delete)."""
    if row is None:
        return None
    return {column.key: _json(getattr(row, column.key)) for column in inspect(type(row)).column_attrs}


def record_change(
    session: AsyncSession,
    actor: str,
    action: str,
    entity: str,
    entity_id: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    reason: str = "",
) -> AuditEvent:
    """Record one change by `actor` (an account id) to `entity` `entity_id`, in the caller's transaction."""
    event = AuditEvent(
        actor=actor, action=action, entity=entity, entity_id=entity_id, before=before, after=after, reason=reason
    )
    session.add(event)
    return event


async def audit_trail(session: AsyncSession, entity: str, entity_id: str) -> list[AuditEvent]:
    """The changes to one record, oldest first."""
    rows = await session.scalars(
        select(AuditEvent)
        .where(AuditEvent.entity == entity, AuditEvent.entity_id == entity_id)
        .order_by(AuditEvent.at, AuditEvent.id)
    )
    return list(rows)


async def entity_cities(session: AsyncSession, entity: str, entity_id: str) -> list[str] | None:
    """The cities an audited record belongs to, which a city-scoped account must see one of; None for a
    network-wide record (a plan, a reconciliation difference), [] for one that no longer exists."""
    if entity == "partner":
        return list(await session.scalar(select(Partner.cities).where(Partner.id == entity_id)) or [])
    if entity == "plan_assignment":
        assignment = int(entity_id) if entity_id.isdigit() else -1
        return list(
            await session.scalar(
                select(Partner.cities)
                .join(PlanAssignment, PlanAssignment.partner_id == Partner.id)
                .where(PlanAssignment.id == assignment)
            )
            or []
        )
    if entity == "station_host":
        query = select(Station.city_code).where(Station.id == entity_id)
    elif entity == "city_franchisee":
        query = select(City.code).where(City.code == entity_id)
    elif entity == "attribution":
        query = select(Rider.city_code).where(Rider.id == entity_id)
    elif entity == "refund":
        query = select(Rider.city_code).join(Refund, Refund.rider_id == Rider.id).where(Refund.id == entity_id)
    else:
        return None
    city = await session.scalar(query)
    return [city] if city else []
