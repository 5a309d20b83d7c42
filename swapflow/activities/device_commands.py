"""Where a door opens: commands to cabinets, recorded before they are published so the device
adapter can route the acknowledgement back to the workflow that sent it."""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity

from swapflow.db.engine import Database
from swapflow.db.models import DeviceCommand, as_utc, utcnow
from swapflow.device_adapter.command_queue import CommandQueue
from swapflow.protocol.v1 import Command
from swapflow.workflows.models import SendCommandInput


class DeviceCommands:
    """Send commands to cabinets on behalf of workflows; one instance per worker."""

    def __init__(self, db: Database, commands_out: CommandQueue) -> None:
        self.db = db
        self.commands_out = commands_out

    @activity.defn(name="send_device_command")
    async def send(self, request: SendCommandInput) -> None:
        """Record the command and queue it for sending (the queue re-sends it until acknowledged or past
        its deadline). A retry republishes the same command id with the same deadline (cabinets act on
        an id once); an acknowledged command is not sent again."""
        now = utcnow()
        async with self.db.transaction() as session:
            row = await session.get(DeviceCommand, request.command_id)
            if row is None:
                row = DeviceCommand(
                    id=request.command_id, cabinet_id=request.cabinet_id, slot_no=request.slot_no,
                    action=request.action.value, workflow_id=request.workflow_id, sent_at=now,
                    deadline_at=now + timedelta(seconds=request.timeout_s),
                )
                session.add(row)
            elif row.acked_at is not None:
                return
            issued_at, deadline = as_utc(row.sent_at), as_utc(row.deadline_at)
        await self.commands_out.send(Command(
            command_id=request.command_id, cabinet_id=request.cabinet_id, action=request.action,
            slot_no=request.slot_no, issued_at=issued_at, deadline=deadline,
        ))
