"""What crosses between the device network and the workflows that wait on it: the device signal a
workflow receives, and the command activity that opens a door or tests a slot. No I/O."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import field_validator
from temporalio import activity

from swapflow.domain.clock import as_utc
from swapflow.protocol.v1 import BatteryReading, CommandAction
from swapflow.workflows.contract import Contract


class DeviceSignalKind(StrEnum):
    DOOR_OPENED = "door_opened"
    DOOR_CLOSED = "door_closed"
    BATTERY_INSERTED = "battery_inserted"
    BATTERY_REMOVED = "battery_removed"
    FAULT = "fault"
    CABINET_ONLINE = "cabinet_online"
    CABINET_OFFLINE = "cabinet_offline"
    BATTERY_REPORT = "battery_report"  # a pack's own telemetry about a reserved slot: in it, or gone from it


DEVICE_SIGNAL = "device_event"
"""Name of the signal the device adapter sends to a waiting workflow."""


class DeviceSignal(Contract):
    """A device message routed to the workflow that waits for it. `message_id` is unique per cabinet
    message; a workflow ignores one it has seen."""

    message_id: str
    kind: DeviceSignalKind
    cabinet_id: str
    at: datetime
    slot_no: int | None = None
    battery: BatteryReading | None = None
    battery_serial: str | None = None
    fault_code: str | None = None
    in_slot: bool | None = None  # BATTERY_REPORT: whether the pack is now in `slot_no`

    @field_validator("at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        # Timestamps are compared across messages, so they must all be aware.
        return as_utc(value)


class SendCommandInput(Contract):
    """Publish one command to a cabinet on behalf of a workflow."""

    command_id: str
    cabinet_id: str
    action: CommandAction
    slot_no: int | None
    workflow_id: str
    timeout_s: float
    ack_wait_s: float = 0.0
    """How long the activity waits for the cabinet's ack; 0 only sends (nobody can or needs to answer)."""


class CommandAnswer(Contract):
    """How a cabinet answered a command; `acked` is False when no ack came within the wait."""

    acked: bool
    ok: bool = False
    error: str | None = None
    battery: BatteryReading | None = None  # what a read_bms read


# ---------------------------------------------------------------------------------- activities
# The device command activities, by name and types: a workflow calls these, never the implementations
# the worker registers (swapflow.activities), so their I/O stays out of the sandbox.


@activity.defn(name="send_device_command")
async def send_device_command(request: SendCommandInput) -> CommandAnswer:
    """Record and publish a command to a cabinet; wait for its ack if asked to."""
    raise NotImplementedError
