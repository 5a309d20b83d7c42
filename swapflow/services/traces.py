"""Traces: everything that happened at a cabinet or to a pack, in order, from the rows each part of
swapflow records (device messages, commands, presence, custody, safety checks, alerts, work orders)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import Select, String, cast, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.devices import DeviceCommand, DeviceMessage
from swapflow.db.network import CabinetPresence
from swapflow.db.ops import Alert, WorkOrder, WorkOrderEvent
from swapflow.db.swaps import CustodyEvent, SafetyEvent
from swapflow.domain.clock import as_utc


class TraceEntry(BaseModel):
    at: datetime
    kind: str
    """device_message | command | custody | alert | work_order | online | safety"""
    summary: str
    data: dict[str, Any] = Field(default_factory=dict)


class Trace(BaseModel):
    subject: str
    entries: list[TraceEntry]


def _ordered(subject: str, entries: list[TraceEntry], limit: int) -> Trace:
    entries.sort(key=lambda e: as_utc(e.at))
    return Trace(subject=subject, entries=entries[-limit:])


async def trace_cabinet(session: AsyncSession, cabinet_id: str, limit: int) -> Trace:
    """Everything that happened at a cabinet, in order: device messages, commands, online/offline
    transitions, custody changes in its slots, alerts and work-order steps (the newest `limit`)."""
    entries: list[TraceEntry] = []
    for m in await session.scalars(
        select(DeviceMessage)
        .where(DeviceMessage.cabinet_id == cabinet_id)
        .order_by(DeviceMessage.id.desc())
        .limit(limit)
    ):
        entries.append(
            TraceEntry(
                at=m.received_at,
                kind="device_message",
                summary=f"{m.kind} ({m.message_id})",
                data={"topic": m.topic, "payload": m.payload, "workflow_id": m.workflow_id},
            )
        )
    for c in await session.scalars(
        select(DeviceCommand)
        .where(DeviceCommand.cabinet_id == cabinet_id)
        .order_by(DeviceCommand.sent_at.desc())
        .limit(limit)
    ):
        outcome = "no ack" if c.acked_at is None else ("ok" if c.ok else f"refused: {c.error}")
        entries.append(
            TraceEntry(
                at=c.sent_at,
                kind="command",
                summary=f"{c.action} slot {c.slot_no}: {outcome}",
                data={
                    "command_id": c.id,
                    "workflow_id": c.workflow_id,
                    "acked_at": c.acked_at.isoformat() if c.acked_at else None,
                },
            )
        )
    for t in await session.scalars(
        select(CabinetPresence)
        .where(CabinetPresence.cabinet_id == cabinet_id)
        .order_by(CabinetPresence.at.desc())
        .limit(limit)
    ):
        entries.append(TraceEntry(at=t.at, kind="online", summary=f"{'online' if t.online else 'offline'} ({t.cause})"))
    slot_prefix = f"{cabinet_id}/%"
    for e in await session.scalars(
        select(CustodyEvent)
        .where(or_(CustodyEvent.from_ref.like(slot_prefix), CustodyEvent.to_ref.like(slot_prefix)))
        .order_by(CustodyEvent.id.desc())
        .limit(limit)
    ):
        entries.append(_custody_entry(e))
    entries += await _alert_and_order_entries(
        session,
        select(Alert).where(Alert.cabinet_id == cabinet_id),
        select(WorkOrder.id).where(WorkOrder.cabinet_id == cabinet_id),
        limit,
    )
    return _ordered(f"cabinet {cabinet_id}", entries, limit)


def _custody_entry(e: CustodyEvent) -> TraceEntry:
    return TraceEntry(
        at=e.at,
        kind="custody",
        summary=f"{e.battery_serial}: {e.from_kind} {e.from_ref} → {e.to_kind} {e.to_ref} ({e.reason})",
        data={"order_id": e.order_id, "key": e.key},
    )


async def _alert_and_order_entries(
    session: AsyncSession, alerts: Select[Alert], orders: Select[str], limit: int
) -> list[TraceEntry]:
    entries = []
    for a in await session.scalars(alerts.order_by(Alert.id.desc()).limit(limit)):
        entries.append(
            TraceEntry(
                at=a.created_at,
                kind="alert",
                summary=f"{a.kind} ({a.severity}) opened: {a.message}",
                data={"alert_id": a.id},
            )
        )
        if a.resolved_at:
            entries.append(
                TraceEntry(at=a.resolved_at, kind="alert", summary=f"{a.kind} resolved", data={"alert_id": a.id})
            )
    for ev in await session.scalars(
        select(WorkOrderEvent)
        .where(WorkOrderEvent.work_order_id.in_(orders))
        .order_by(WorkOrderEvent.id.desc())
        .limit(limit)
    ):
        entries.append(
            TraceEntry(
                at=ev.at,
                kind="work_order",
                summary=f"{ev.work_order_id}: {ev.kind} {ev.detail}",
                data={"actor": ev.actor, "work_order_id": ev.work_order_id},
            )
        )
    return entries


async def trace_battery(session: AsyncSession, serial: str, limit: int) -> Trace:
    """Everything that happened to a pack, in order: device messages that name it, custody changes,
    safety checks, alerts and the work orders of the slots it was quarantined in."""
    entries: list[TraceEntry] = []
    mentions = or_(DeviceMessage.topic.contains(f"/{serial}/"), cast(DeviceMessage.payload, String).contains(serial))
    messages = select(DeviceMessage).where(mentions).order_by(DeviceMessage.id.desc()).limit(limit)
    for m in await session.scalars(messages):
        entries.append(
            TraceEntry(
                at=m.received_at,
                kind="device_message",
                summary=f"{m.kind} at {m.cabinet_id} ({m.message_id})",
                data={"topic": m.topic, "payload": m.payload, "workflow_id": m.workflow_id},
            )
        )
    for e in await session.scalars(
        select(CustodyEvent).where(CustodyEvent.battery_serial == serial).order_by(CustodyEvent.id.desc()).limit(limit)
    ):
        entries.append(_custody_entry(e))
    for s in await session.scalars(
        select(SafetyEvent).where(SafetyEvent.battery_serial == serial).order_by(SafetyEvent.id.desc()).limit(limit)
    ):
        entries.append(
            TraceEntry(
                at=s.at,
                kind="safety",
                summary=f"{s.verdict} at {s.cabinet_id}/{s.slot_no}",
                data={"reasons": s.reasons, "order_id": s.order_id},
            )
        )
    quarantined_slots = select(Alert.cabinet_id, Alert.slot_no).where(Alert.battery_serial == serial)
    slot_keys = [f"{c}/{n or '-'}" for c, n in (await session.execute(quarantined_slots)).tuples()]
    entries += await _alert_and_order_entries(
        session,
        select(Alert).where(Alert.battery_serial == serial),
        select(WorkOrder.id).where(WorkOrder.dedupe_key.in_(slot_keys)),
        limit,
    )
    return _ordered(f"battery {serial}", entries, limit)
