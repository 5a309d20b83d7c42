"""Tower protocol ↔ protocol v1. `CabinetView` holds what a tower cabinet has reported (every signal
per door, the alarms in force) and turns each report into the v1 messages a v1 cabinet would have
sent: the birth, telemetry, and door/battery/fault events found by comparing old and new values."""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from swapflow.gateway.messages import Alarm, AlarmReport, AttributeReport, ControlRequest, ControlResponse, Param
from swapflow.gateway.signals import NUMERIC, Control, Signal, SlotStatus, fault_code
from swapflow.protocol.v1 import (
    BatteryReading,
    CabinetEvent,
    CabinetState,
    Command,
    CommandAck,
    CommandAction,
    EventType,
    SlotReport,
    Telemetry,
)

CONTROL_OF_ACTION = {
    CommandAction.OPEN_DOOR: Control.OPEN_DOOR,
    CommandAction.CLOSE_DOOR: Control.CLOSE_DOOR,
    CommandAction.READ_BMS: Control.READ_BMS,
    CommandAction.LOCK_SLOT: Control.LOCK_SLOT,
    CommandAction.UNLOCK_SLOT: Control.UNLOCK_SLOT,
}
ACTION_OF_CONTROL = {control: action for action, control in CONTROL_OF_ACTION.items()}
_REMEMBERED_COMMANDS = 1_000  # as the v1 reference firmware: enough for the longest command deadline


class TranslationError(ValueError):
    """A well-formed message whose content cannot be translated (a bad signal value)."""


def _check_value(signal_id: str, value: Any) -> None:
    if signal_id in NUMERIC:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise TranslationError(f"signal {signal_id}: {value!r} is not a number") from None
        if not math.isfinite(number):
            raise TranslationError(f"signal {signal_id}: {value!r} is not a finite number")
    elif signal_id == Signal.DOOR_STATUS and str(value) not in ("0", "1"):
        raise TranslationError(f"signal {signal_id} (door status): {value!r} is not 0 or 1")
    elif signal_id == Signal.SLOT_STATUS and str(value) not in {str(int(s)) for s in SlotStatus}:
        raise TranslationError(f"signal {signal_id} (slot status): {value!r} is not 0, 1, 2 or 5")


def _number(values: dict[str, Any], signal: Signal, default: float) -> float:
    value = values.get(signal)
    return default if value in (None, "") else float(value)


def battery_reading(values: dict[str, Any]) -> BatteryReading | None:
    """The pack a door's signals describe, or None when the slot is empty."""
    serial = str(values.get(Signal.BATTERY_SERIAL) or "").strip()
    if not serial:
        return None
    try:
        return BatteryReading(
            serial=serial,
            soc=_number(values, Signal.SOC, 0.0),
            soh=_number(values, Signal.SOH, 100.0),
            voltage_v=_number(values, Signal.PACK_VOLTAGE, 0.0),
            current_a=_number(values, Signal.PACK_CURRENT, 0.0),
            temperature_c=_number(values, Signal.CELL_TEMPERATURE, 25.0),
            cycle_count=int(_number(values, Signal.CYCLE_COUNT, 0.0)),
        )
    except ValidationError as exc:
        raise TranslationError(f"battery {serial}: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}") from None


@dataclass
class PendingCommand:
    """A v1 command sent on as a control request, waiting for its 501."""

    command: Command
    txn_no: int
    sent_at: float
    ack: CommandAck | None = None


@dataclass
class CabinetView:
    """Everything one tower cabinet has reported, kept across its connections (a reconnecting cabinet
    is compared with what it said last, so what happened while it was away becomes events)."""

    cabinet_id: str
    doors: dict[int, dict[str, Any]] = field(default_factory=dict)
    cabinet: dict[str, Any] = field(default_factory=dict)
    alarms: dict[int, dict[str, str]] = field(default_factory=dict)
    """Alarms in force per door (0: the cabinet): alarm id → fault code."""
    firmware: str | None = None
    seq: int = 0
    commands: OrderedDict[str, PendingCommand] = field(default_factory=OrderedDict)
    """Recent commands by command id (a redelivered command is not sent twice)."""
    by_txn: dict[int, str] = field(default_factory=dict)

    # ------------------------------------------------------------------------------ cabinet → platform

    def apply_report(self, report: AttributeReport, at: datetime) -> list[CabinetEvent]:
        """Take a report in; return the v1 events its changes amount to, in the order a v1 cabinet sends
        them: doors opening, then packs leaving and arriving, then doors closing. TranslationError (and
        nothing applied) when a value is bad."""
        for attr in report.attrList:
            _check_value(attr.id, attr.value)
        updates: dict[int, dict[str, Any]] = {}
        for attr in report.attrList:
            updates.setdefault(attr.doorId or 0, {})[attr.id] = attr.value
        self.cabinet.update(updates.pop(0, {}))
        # Validate every pack the report describes before anything changes.
        merged = {door: {**self.doors.get(door, {}), **values} for door, values in updates.items()}
        for values in merged.values():
            battery_reading(values)
        opened: list[tuple[EventType, int, dict[str, Any]]] = []
        moved: list[tuple[EventType, int, dict[str, Any]]] = []
        closed: list[tuple[EventType, int, dict[str, Any]]] = []
        for door, new in merged.items():
            old = self.doors.get(door)
            self.doors[door] = new
            if old is None:
                continue  # a door heard of for the first time has no change to report
            was_open, is_open = _is_open(old), _is_open(new)
            if is_open and not was_open:
                opened.append((EventType.DOOR_OPENED, door, {}))
            old_serial = str(old.get(Signal.BATTERY_SERIAL) or "").strip()
            new_serial = str(new.get(Signal.BATTERY_SERIAL) or "").strip()
            if old_serial != new_serial:
                if old_serial:
                    moved.append((EventType.BATTERY_REMOVED, door, {"battery_serial": old_serial}))
                if new_serial:
                    moved.append((EventType.BATTERY_INSERTED, door, {"battery": battery_reading(new)}))
            if was_open and not is_open:
                closed.append((EventType.DOOR_CLOSED, door, {}))
        return [
            CabinetEvent(
                event_id=f"{self.cabinet_id}-{report.txnNo}-{n}",
                cabinet_id=self.cabinet_id,
                ts=at,
                type=kind,
                slot_no=door,
                **extra,
            )
            for n, (kind, door, extra) in enumerate(opened + moved + closed, start=1)
        ]

    def apply_alarms(self, report: AlarmReport, at: datetime) -> list[CabinetEvent]:
        """Take an alarm report in; each alarm that starts becomes a v1 `fault` event (an alarm that ends
        clears the slot's fault in the next telemetry)."""
        events = []
        for n, alarm in enumerate(report.alarmList, start=1):
            door = alarm.doorId or 0
            code = fault_code(alarm.id)
            if alarm.alarmFlag == 0:
                self.alarms.get(door, {}).pop(alarm.id, None)
                continue
            self.alarms.setdefault(door, {})[alarm.id] = code
            events.append(
                CabinetEvent(
                    event_id=f"{self.cabinet_id}-{report.txnNo}-a{n}",
                    cabinet_id=self.cabinet_id,
                    ts=at,
                    type=EventType.FAULT,
                    slot_no=door or None,
                    fault_code=code,
                    detail=_alarm_detail(alarm),
                )
            )
        return events

    def slots(self) -> list[SlotReport]:
        """Every door as a v1 slot report."""
        reports = []
        for door, values in sorted(self.doors.items()):
            status = str(values.get(Signal.SLOT_STATUS, "0"))
            alarms = self.alarms.get(door)
            fault = next(iter(alarms.values())) if alarms else ("slot_fault" if status == "5" else None)
            reports.append(
                SlotReport(
                    slot_no=door,
                    door="open" if _is_open(values) else "closed",
                    battery=battery_reading(values),
                    charging=status == str(int(SlotStatus.CHARGING)),
                    fault=fault,
                )
            )
        return reports

    def birth(self, at: datetime) -> CabinetState:
        """The v1 birth: online, with every slot."""
        return CabinetState(cabinet_id=self.cabinet_id, online=True, ts=at, firmware=self.firmware, slots=self.slots())

    def offline(self, reason: str | None = None) -> CabinetState:
        """The v1 offline state: the last-will (no reason), or the state the gateway publishes itself
        when it closes the cabinet's link, stamped now, with why (`reason`)."""
        return CabinetState(
            cabinet_id=self.cabinet_id, online=False, ts=datetime.now(UTC), firmware=self.firmware, reason=reason
        )

    def telemetry(self, at: datetime, txn_no: int) -> Telemetry:
        """v1 telemetry of the whole cabinet; `seq` keeps increasing across reconnects."""
        self.seq = max(self.seq + 1, txn_no)
        temperature = self.cabinet.get(Signal.CABINET_TEMPERATURE)
        return Telemetry(
            cabinet_id=self.cabinet_id,
            ts=at,
            seq=self.seq,
            slots=self.slots(),
            cabinet_temperature_c=None if temperature in (None, "") else float(temperature),
        )

    # ------------------------------------------------------------------------------ platform → cabinet

    def control_request(self, command: Command, txn_no: int) -> ControlRequest:
        """The control request (500) carrying a v1 command."""
        return ControlRequest(
            txnNo=txn_no,
            devId=self.cabinet_id,
            paramList=[
                Param(
                    id=Signal.CABINET_CONTROL,
                    value=int(CONTROL_OF_ACTION[command.action]),
                    doorId=command.slot_no,
                )
            ],
        )

    def remember(self, pending: PendingCommand) -> None:
        """Keep a command sent on, forgetting the oldest beyond what any deadline needs."""
        self.commands[pending.command.command_id] = pending
        self.by_txn[pending.txn_no] = pending.command.command_id
        while len(self.commands) > _REMEMBERED_COMMANDS:
            _, old = self.commands.popitem(last=False)
            self.by_txn.pop(old.txn_no, None)

    def ack(self, response: ControlResponse, at: datetime) -> PendingCommand | None:
        """The pending command a control response (501) answers, with its v1 ack set; None when the
        response answers nothing we sent."""
        command_id = self.by_txn.get(response.txnNo)
        pending = self.commands.get(command_id) if command_id else None
        if pending is None:
            return None
        if pending.ack is None:
            result = None
            if pending.command.action is CommandAction.READ_BMS and response.result == 1:
                result = battery_reading({p.id: p.value for p in response.paramList})
            pending.ack = CommandAck(
                command_id=pending.command.command_id,
                cabinet_id=self.cabinet_id,
                ok=response.result == 1,
                ts=at,
                error=None if response.result == 1 else (response.reason or "failed"),
                result=result,
            )
        return pending


def _is_open(values: dict[str, Any]) -> bool:
    return str(values.get(Signal.DOOR_STATUS, "0")) == "1"


def _alarm_detail(alarm: Alarm) -> str:
    detail = f"tower alarm {alarm.id}"
    if alarm.batteryId:
        detail += f", battery {alarm.batteryId}"
    if alarm.alarmTime is not None:
        detail += f", since {alarm.alarmTime}"
    return detail
