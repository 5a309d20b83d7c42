"""Device protocol v1: the MQTT topics and JSON payloads spoken between cabinets and the platform.

The prose version, with examples, is docs/protocol.md. Every payload is validated by these models at
both ends: the device adapter on the platform side, the simulator on the cabinet side.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    v: Literal[1] = 1


class Channel(StrEnum):
    """The last topic level under `<prefix>/cabinets/<cabinet_id>/`."""

    STATE = "state"  # retained birth / last-will, cabinet → platform
    TELEMETRY = "telemetry"  # periodic full slot state, cabinet → platform
    EVENTS = "events"  # door and battery events, faults, cabinet → platform
    COMMANDS = "commands"  # platform → cabinet
    ACKS = "acks"  # command acknowledgements, cabinet → platform


def battery_topic(prefix: str, serial: str) -> str:
    """The topic a pack reports on by itself (packs in command-only cabinets report here)."""
    return f"{prefix}/batteries/{serial}/telemetry"


def parse_battery_topic(prefix: str, topic: str) -> str | None:
    """The serial of a battery telemetry topic, or None when the topic is not one."""
    head, tail = f"{prefix}/batteries/", "/telemetry"
    if not (topic.startswith(head) and topic.endswith(tail)):
        return None
    serial = topic[len(head) : -len(tail)]
    return serial if serial and "/" not in serial else None


def cabinet_topic(prefix: str, cabinet_id: str, channel: Channel) -> str:
    """The topic of one cabinet's channel."""
    return f"{prefix}/cabinets/{cabinet_id}/{channel.value}"


def parse_cabinet_topic(prefix: str, topic: str) -> tuple[str, Channel] | None:
    """(cabinet id, channel) of a cabinet topic, or None when the topic is not one."""
    head = f"{prefix}/cabinets/"
    if not topic.startswith(head):
        return None
    parts = topic[len(head) :].split("/")
    if len(parts) != 2 or not parts[0]:
        return None
    try:
        return parts[0], Channel(parts[1])
    except ValueError:
        return None


IDLE_CURRENT_A = 0.2
"""Below this pack current, in either direction, the pack is resting (BMS offset, balancing); above it, a
charger is feeding it."""


class BatteryReading(_Message):
    """What a pack's BMS reports."""

    serial: str = Field(min_length=1, max_length=40)
    soc: float = Field(ge=0, le=100, description="State of charge, percent.")
    soh: float = Field(ge=0, le=100, description="State of health, percent.")
    voltage_v: float = Field(ge=0)
    current_a: float = Field(0.0, description="Positive while charging.")
    temperature_c: float
    cycle_count: int = Field(ge=0)
    fault_codes: list[str] = Field(default_factory=list)


class SlotReport(_Message):
    slot_no: int = Field(ge=1)
    door: Literal["open", "closed"]
    battery: BatteryReading | None = None
    charging: bool = False
    fault: str | None = None


class CabinetState(_Message):
    """Retained on `state`: the birth message (online, full slot state) or the last-will (offline)."""

    cabinet_id: str
    online: bool
    ts: datetime | None = None
    firmware: str | None = None
    slots: list[SlotReport] | None = None
    reason: str | None = Field(
        None, max_length=40, description='Offline only: "shutdown" when the cabinet disconnects cleanly.'
    )


class Telemetry(_Message):
    cabinet_id: str
    ts: datetime
    seq: int = Field(ge=0, description="Increases per message; lets the platform drop stale telemetry.")
    slots: list[SlotReport]
    cabinet_temperature_c: float | None = None


class EventType(StrEnum):
    DOOR_OPENED = "door_opened"
    DOOR_CLOSED = "door_closed"
    BATTERY_INSERTED = "battery_inserted"
    BATTERY_REMOVED = "battery_removed"
    FAULT = "fault"


class CabinetEvent(_Message):
    """A door or battery event. `event_id` is unique per cabinet: a repeat is a duplicate."""

    event_id: str = Field(min_length=1, max_length=80)
    cabinet_id: str
    ts: datetime
    type: EventType
    slot_no: int | None = Field(None, ge=1)
    battery: BatteryReading | None = Field(None, description="On battery_inserted: the pack's BMS reading.")
    battery_serial: str | None = Field(None, description="On battery_removed: the pack that left.")
    fault_code: str | None = None
    detail: str | None = None


class CommandAction(StrEnum):
    OPEN_DOOR = "open_door"
    CLOSE_DOOR = "close_door"
    READ_BMS = "read_bms"
    LOCK_SLOT = "lock_slot"
    UNLOCK_SLOT = "unlock_slot"


class Command(_Message):
    """Platform → cabinet. A cabinet ignores a command whose deadline has passed."""

    command_id: str = Field(min_length=1, max_length=60)
    cabinet_id: str
    action: CommandAction
    slot_no: int | None = Field(None, ge=1)
    issued_at: datetime
    deadline: datetime


class CommandAck(_Message):
    """Cabinet → platform, once per command id; `result` carries the BMS reading for read_bms."""

    command_id: str = Field(min_length=1, max_length=60)
    cabinet_id: str
    ok: bool
    ts: datetime
    error: str | None = None
    result: BatteryReading | None = None


class BatteryTelemetry(_Message):
    """A pack's own report (its BMS over the pack's modem), independent of any cabinet. `cabinet_id` and
    `slot_no` name the slot charging it, or are null while the pack is out of a cabinet. This is the
    redundant evidence that closes the loop for cabinets that cannot report (docs/protocol.md)."""

    serial: str = Field(min_length=1, max_length=40)
    ts: datetime
    seq: int = Field(ge=0)
    reading: BatteryReading
    charging: bool
    cabinet_id: str | None = None
    slot_no: int | None = Field(None, ge=1)
