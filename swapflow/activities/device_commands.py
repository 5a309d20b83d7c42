"""Where a door opens: commands to cabinets, recorded before they are published (the device adapter
records the acknowledgement against them), and their acks, which the sending activity waits for."""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity

from swapflow.db.devices import DeviceCommand
from swapflow.db.engine import Database
from swapflow.device_commands.queue import CommandQueue
from swapflow.domain.clock import as_utc, utcnow
from swapflow.protocol.v1 import BatteryReading, Command
from swapflow.workflows.device_contract import CommandAnswer, SendCommandInput


def _recorded_answer(row: DeviceCommand) -> CommandAnswer:
    """The ack the device adapter recorded on a command."""
    battery = BatteryReading.model_validate(row.result) if row.result else None
    return CommandAnswer(acked=True, ok=bool(row.ok), error=row.error, battery=battery)


class DeviceCommands:
    """Send commands to cabinets on behalf of workflows; one instance per worker."""

    def __init__(self, db: Database, commands_out: CommandQueue) -> None:
        self.db = db
        self.commands_out = commands_out

    @activity.defn(name="send_device_command")
    async def send(self, request: SendCommandInput) -> CommandAnswer:
        """Record the command, queue it for sending (the queue re-sends it until acknowledged or past its
        deadline) and wait up to `ack_wait_s` for the cabinet's ack. Waiting here, not for a signal,
        costs the workflow no history events and no extra workflow task. A retry republishes the same
        command id with the same deadline (cabinets act on an id once and ack it again); an acknowledged
        command is not sent again."""
        now = utcnow()
        async with self.db.transaction() as session:
            row = await session.get(DeviceCommand, request.command_id)
            if row is None:
                row = DeviceCommand(
                    id=request.command_id,
                    cabinet_id=request.cabinet_id,
                    slot_no=request.slot_no,
                    action=request.action.value,
                    workflow_id=request.workflow_id,
                    sent_at=now,
                    deadline_at=now + timedelta(seconds=request.timeout_s),
                )
                session.add(row)
            elif row.acked_at is not None:
                return _recorded_answer(row)
            issued_at, deadline = as_utc(row.sent_at), as_utc(row.deadline_at)
        command = Command(
            command_id=request.command_id,
            cabinet_id=request.cabinet_id,
            action=request.action,
            slot_no=request.slot_no,
            issued_at=issued_at,
            deadline=deadline,
        )
        if request.ack_wait_s <= 0:
            await self.commands_out.send(command)
            return CommandAnswer(acked=False)
        ack = await self.commands_out.send_and_wait(command, request.ack_wait_s)
        if ack is not None:
            return CommandAnswer(acked=True, ok=ack.ok, error=ack.error, battery=ack.result)
        async with self.db.sessions() as session:  # an ack this process missed, recorded by the adapter
            row = await session.get(DeviceCommand, request.command_id)
            return _recorded_answer(row) if row is not None and row.acked_at is not None else CommandAnswer(acked=False)
