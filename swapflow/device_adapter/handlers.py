"""A cabinet's state, events and command acks: each recorded once (a redelivery or another adapter's
copy is a duplicate), applied to the device view in the database, and signalled to the swap waiting
for it. The ack of a command is only recorded: the activity that sent it hears its ack itself."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from sqlalchemy import literal, null, select
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.base import table_of
from swapflow.db.devices import DeviceCommand, DeviceMessage
from swapflow.db.network import Cabinet, Slot
from swapflow.device_adapter.clock import DeviceClock
from swapflow.device_adapter.ingest import CabinetReport, write_latest_state
from swapflow.device_adapter.metrics import AdapterMetrics, AdapterStats
from swapflow.device_adapter.payloads import Rejected, check_cabinet_id, load_json, parse
from swapflow.device_adapter.presence import (
    is_last_will,
    offline_cause,
    reconcile_slots,
    record_transition,
    swaps_in_progress,
)
from swapflow.device_adapter.reconcile import reconcile_event
from swapflow.device_adapter.signals import SignalSender
from swapflow.device_adapter.storage import Storage, known_cabinet
from swapflow.device_adapter.telemetry import TelemetryBatch
from swapflow.device_adapter.topics import CabinetRoute
from swapflow.domain.clock import as_utc, utcnow
from swapflow.domain.network import DoorState, PresenceCause
from swapflow.protocol.v1 import CabinetEvent, CabinetState, Channel, CommandAck, EventType
from swapflow.workflows.device_contract import DeviceSignal, DeviceSignalKind
from swapflow.workflows.swap_contract import swap_workflow_id

log = logging.getLogger(__name__)

# door_opened only updates state: the open_door ack already told the sender, and every signal costs
# the workflow a task. What a swap waits for is signalled.
SIGNALLED_EVENTS = frozenset(
    {EventType.DOOR_CLOSED, EventType.BATTERY_INSERTED, EventType.BATTERY_REMOVED, EventType.FAULT}
)


class CabinetMessages:
    """Handles a cabinet's state, events and acks. It keeps nothing: what it learns goes to the
    database, to `telemetry` (which must not undo it with older reports) and to `signals`."""

    def __init__(
        self,
        storage: Storage,
        clock: DeviceClock,
        telemetry: TelemetryBatch,
        signals: SignalSender,
        metrics: AdapterMetrics,
        stats: AdapterStats,
    ) -> None:
        self._storage = storage
        self._clock = clock
        self._telemetry = telemetry
        self._signals = signals
        self._metrics = metrics
        self._stats = stats

    async def handle(self, route: CabinetRoute, payload: bytes) -> list[asyncio.Task[None]]:
        """Parse, record and apply one state, event or ack; returns the signal deliveries it started.
        Raises Rejected for what cannot be accepted."""
        if route.channel is Channel.TELEMETRY:
            raise ValueError("telemetry is written in batches (TelemetryBatch), not one message at a time")
        if route.channel is Channel.COMMANDS:
            raise Rejected("commands flow from the platform to cabinets, not back")
        data = load_json(payload)
        if route.channel is Channel.STATE:
            return await self._on_state(route, payload, parse(CabinetState, route.channel.value, data))
        if route.channel is Channel.EVENTS:
            return await self._on_event(route, payload, data, parse(CabinetEvent, route.channel.value, data))
        return await self._on_ack(route, data, parse(CommandAck, route.channel.value, data))

    async def _on_state(self, route: CabinetRoute, payload: bytes, state: CabinetState) -> list[asyncio.Task[None]]:
        cabinet_id, topic = route.cabinet_id, route.topic
        check_cabinet_id(cabinet_id, state.cabinet_id)
        stamped = self._clock.bound(state.ts, past=False) if state.ts else utcnow()
        kind = DeviceSignalKind.CABINET_ONLINE if state.online else DeviceSignalKind.CABINET_OFFLINE
        cause = PresenceCause.BIRTH if state.online else offline_cause(state)
        # Derived from the message, so the retained copy seen again after a reconnect, or by a second
        # adapter, is recognised as the same transition.
        message_id = f"state:{kind.value}:{stamped.isoformat()}"[:80]
        # A last-will carries the time it was registered (at connect), not when the link died: the
        # broker publishes it when it notices, so the transition is stamped on arrival.
        will = is_last_will(state)
        at = utcnow() if will else stamped

        async def work(session: AsyncSession) -> tuple[list[str], int]:
            # Locked: the transition is decided on `online`, which telemetry and the sweep also change.
            cabinet = await session.get(Cabinet, cabinet_id, with_for_update=True)
            if cabinet is None:
                raise Rejected(f"unknown cabinet {cabinet_id!r}")
            # A retained birth replayed after our reconnect is older than what telemetry has told us
            # since; an offline state sent just before a reconnect (on the old connection) may arrive
            # after the new birth. Either is stale by its own timestamp. Equal is not stale: a birth
            # and the telemetry of the same report share a timestamp, and telemetry travels apart.
            news = cabinet.last_seen_at is None or at >= as_utc(cabinet.last_seen_at)
            if not news and not will:
                return [], 0
            changed = cabinet.online != state.online
            # A transition seen before (a retained copy, another adapter) changes nothing, not even the flag.
            if changed and not await self._storage.record(
                session, cabinet_id, message_id, kind.value, topic, state.model_dump(mode="json", exclude_none=True)
            ):
                return [], 0
            cabinet.online = state.online
            if state.firmware:
                cabinet.firmware = state.firmware
            discrepancies = 0
            if state.online:
                cabinet.last_seen_at = at
                if state.slots:
                    # A birth re-announces every slot: packs that moved while it was away show here.
                    discrepancies = len(await reconcile_slots(session, cabinet_id, at, state.slots))
                    await write_latest_state(session, [CabinetReport(cabinet_id, at, state.slots)])
            if not changed:
                return [], discrepancies
            record_transition(session, cabinet_id, state.online, cause, at)
            self._metrics.presence_transitions.labels(cause.value).inc()
            return await swaps_in_progress(session, cabinet_id), discrepancies

        order_ids, discrepancies = await self._storage.transaction(work)
        if discrepancies:
            log.warning("cabinet %s reconnected with %d slots that differ from custody", cabinet_id, discrepancies)
        self._telemetry.forget_slots(cabinet_id)
        if state.online:
            self._telemetry.new_session(cabinet_id)
        else:
            self._telemetry.last_will(cabinet_id)
        signal = DeviceSignal(message_id=message_id, kind=kind, cabinet_id=cabinet_id, at=at)
        return [self._signals.send(swap_workflow_id(o), signal, topic=topic, payload=payload) for o in order_ids]

    async def _on_event(
        self, route: CabinetRoute, payload: bytes, raw: dict[str, Any], event: CabinetEvent
    ) -> list[asyncio.Task[None]]:
        cabinet_id, topic = route.cabinet_id, route.topic
        check_cabinet_id(cabinet_id, event.cabinet_id)
        at = self._clock.bound(event.ts)

        async def work(session: AsyncSession) -> tuple[bool, str | None]:
            await known_cabinet(session, cabinet_id)
            slot: Slot | None = None
            if event.slot_no is not None:
                slot = await session.scalar(
                    select(Slot).where(Slot.cabinet_id == cabinet_id, Slot.slot_no == event.slot_no)
                )
                if slot is None:
                    raise Rejected(f"cabinet {cabinet_id} has no slot {event.slot_no}")
            # Events without a slot (cabinet-wide faults) are recorded but wait for no workflow.
            workflow_id = swap_workflow_id(slot.reserved_order_id) if slot and slot.reserved_order_id else None
            if not await self._storage.record(
                session, cabinet_id, event.event_id, event.type.value, topic, raw, workflow_id
            ):
                return False, None
            if slot is not None:
                if event.type is EventType.DOOR_OPENED:
                    slot.door = DoorState.OPEN
                elif event.type is EventType.DOOR_CLOSED:
                    slot.door = DoorState.CLOSED
                elif event.type is EventType.FAULT:
                    slot.fault = (event.fault_code or event.detail or "fault")[:100]
                await reconcile_event(session, slot, event, at)
            return True, workflow_id

        accepted, workflow_id = await self._storage.transaction(work)
        if not accepted:
            self._stats.duplicates += 1
            return []
        if event.type in (EventType.DOOR_OPENED, EventType.DOOR_CLOSED):
            self._telemetry.door_event(cabinet_id, at)
        self._telemetry.forget_slots(cabinet_id)  # the event changed a slot behind telemetry's back
        if workflow_id is None or event.type not in SIGNALLED_EVENTS:
            return []
        signal = DeviceSignal(
            message_id=event.event_id,
            kind=DeviceSignalKind(event.type.value),
            cabinet_id=cabinet_id,
            at=at,
            slot_no=event.slot_no,
            battery=event.battery,
            battery_serial=event.battery_serial,
            fault_code=event.fault_code,
        )
        return [self._signals.send(workflow_id, signal, topic=topic, payload=payload)]

    async def _on_ack(self, route: CabinetRoute, raw: dict[str, Any], ack: CommandAck) -> list[asyncio.Task[None]]:
        cabinet_id = route.cabinet_id
        check_cabinet_id(cabinet_id, ack.cabinet_id)
        acked_at = utcnow()
        commands, messages = table_of(DeviceCommand), table_of(DeviceMessage)
        # The ack is recorded as a device message (its unique key catches a redelivery) and on its command,
        # only if the command exists and was sent to this cabinet: one statement, no ORM objects. Acks come
        # in beside thousands of telemetry messages a second, and their round trip is the door's.
        known = select(
            commands.c.cabinet_id,
            literal(f"ack:{ack.command_id}"),
            literal("command_ack"),
            literal(route.topic[:200]),
            literal(raw, messages.c.payload.type),
            commands.c.workflow_id,
            literal(acked_at, messages.c.received_at.type),
        ).where(commands.c.id == ack.command_id, commands.c.cabinet_id == cabinet_id)
        record = (
            self._storage.insert(messages)
            .from_select(
                ["cabinet_id", "message_id", "kind", "topic", "payload", "workflow_id", "received_at"],
                known,
            )
            .on_conflict_do_nothing(index_elements=["cabinet_id", "message_id"])
        )
        acknowledge = (
            commands.update()
            .where(commands.c.id == ack.command_id)
            .values(
                acked_at=acked_at,
                ok=ack.ok,
                error=ack.error[:200] if ack.error else None,
                result=ack.result.model_dump(mode="json") if ack.result else null(),
            )
            .returning(commands.c.sent_at)
        )

        async def work(session: AsyncSession) -> datetime | None:
            if self._storage.postgres:
                # The insert as a CTE of the update: one statement, atomic without a transaction around it,
                # so autocommit spares the BEGIN and COMMIT round trips (the commit is as durable).
                await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
                recorded = record.returning(messages.c.cabinet_id).cte("recorded")
                sent_at = await session.scalar(acknowledge.where(commands.c.cabinet_id == recorded.c.cabinet_id))
            elif (await session.execute(record.returning(messages.c.id))).first() is not None:
                sent_at = await session.scalar(acknowledge)
            else:
                sent_at = None
            if sent_at is None:
                await _refuse_unrecorded_ack(session, cabinet_id, ack.command_id)
            return sent_at

        sent_at = await self._storage.transaction(work)
        if sent_at is None:
            self._stats.duplicates += 1
        else:
            self._metrics.command_round_trip.observe(max(0.0, (acked_at - as_utc(sent_at)).total_seconds()))
        return []  # no signal: the activity that sent the command waits for its ack itself


async def _refuse_unrecorded_ack(session: AsyncSession, cabinet_id: str, command_id: str) -> None:
    """Why an ack was not recorded: Rejected when its cabinet or command is unknown or the command went
    to another cabinet; otherwise it was a duplicate, and this returns."""
    owner = await session.scalar(select(DeviceCommand.cabinet_id).where(DeviceCommand.id == command_id))
    if owner == cabinet_id:
        return
    await known_cabinet(session, cabinet_id)
    if owner is None:
        raise Rejected(f"ack for unknown command {command_id!r}")
    raise Rejected(f"ack for command {command_id!r}, which was sent to {owner}")
