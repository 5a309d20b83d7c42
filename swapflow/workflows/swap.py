"""Where a swap starts and runs: the swap workflow, `swap/<order id>`.

admit (validate rider and cabinet, reserve a charged pack and an empty slot, price) → charge →
open the return door → wait for the flat pack and the door → read its BMS and take it into custody →
open the charged pack's door → wait for its removal → finish. Device messages arrive as signals from
the device adapter; every wait is bounded. A failure at any step runs the compensations of what
succeeded, in reverse order, and ends the order as failed with its reason.

Deterministic orchestration only: all I/O is in activities (swapflow.activities).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from swapflow.activities.device_commands import DeviceCommands
    from swapflow.activities.payments import PaymentActivities
    from swapflow.activities.swap_records import SwapRecords
    from swapflow.db.models import SwapStage, SwapStatus
    from swapflow.protocol.v1 import CommandAction
    from swapflow.workflows.models import (
        DEVICE_SIGNAL,
        Admission,
        ChargeInput,
        DeviceSignal,
        DeviceSignalKind,
        RefundInput,
        ReturnCheck,
        SendCommandInput,
        StageUpdate,
        SwapFinish,
        SwapProgress,
        SwapRequest,
    )

# Short database steps: retried quickly, given up after a bound so the swap can compensate.
DB_STEP: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=10),
    "schedule_to_close_timeout": timedelta(seconds=60),
    "retry_policy": RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=5)),
}
# Compensations must happen, however long the outage: retried without a bound.
MUST_COMPLETE: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=30),
    "retry_policy": RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1)),
}
PAYMENT_STEP: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=30),
    "schedule_to_close_timeout": timedelta(minutes=2),
    "retry_policy": RetryPolicy(initial_interval=timedelta(milliseconds=500), maximum_interval=timedelta(seconds=10)),
}

ADMITTED_STAGES = frozenset({SwapStage.CREATED, SwapStage.VALIDATED, SwapStage.RESERVED, SwapStage.PAID})


class SwapFailed(Exception):
    """A step ended in a way that makes the swap fail; `reason` is what the rider and ops see."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def failure_reason(error: BaseException) -> str:
    """The reason recorded on a failed order for the exception that failed it."""
    if isinstance(error, SwapFailed):
        return error.reason
    if isinstance(error, ActivityError) and isinstance(error.cause, ApplicationError):
        return error.cause.message
    if isinstance(error, ApplicationError):
        return error.message
    if isinstance(error, asyncio.CancelledError):
        return "cancelled"
    return f"internal_error: {type(error).__name__}"


@workflow.defn(name="Swap")
class SwapWorkflow:
    """One battery swap, from scan to the rider riding off with a charged pack (or a refund)."""

    @workflow.init
    def __init__(self, request: SwapRequest) -> None:
        self._request = request
        self._stage = SwapStage.CREATED
        self._status = SwapStatus.IN_PROGRESS
        self._failure: str | None = None
        self._admission: Admission | None = None
        self._seen: set[str] = set()
        self._acks: dict[str, DeviceSignal] = {}
        self._events: list[DeviceSignal] = []
        self._commands_sent = 0

    @workflow.signal(name=DEVICE_SIGNAL)
    def device_event(self, signal: DeviceSignal) -> None:
        """A door, battery or ack message from the cabinet; a repeated message changes nothing."""
        if signal.message_id in self._seen:
            return
        self._seen.add(signal.message_id)
        if signal.kind == DeviceSignalKind.COMMAND_ACK and signal.command_id is not None:
            self._acks.setdefault(signal.command_id, signal)
        else:
            self._events.append(signal)

    @workflow.update(name="admission")
    async def admission(self) -> SwapProgress:
        """Returns once the return door is open (go and put the pack in) or the swap has failed."""
        await workflow.wait_condition(
            lambda: self._stage not in ADMITTED_STAGES or self._status != SwapStatus.IN_PROGRESS
        )
        return self.progress()

    @workflow.query(name="progress")
    def progress(self) -> SwapProgress:
        """Where the swap is now."""
        return SwapProgress(
            order_id=self._request.order_id, status=self._status, stage=self._stage,
            return_slot_no=self._admission.return_slot_no if self._admission else None,
            charged_slot_no=self._admission.charged_slot_no if self._admission else None,
            failure_reason=self._failure,
        )

    @workflow.run
    async def run(self, request: SwapRequest) -> SwapProgress:
        """Run the swap; compensate and end it as failed if any step fails."""
        compensations: list[Callable[[str], Awaitable[None]]] = []
        try:
            await self._swap(request, compensations)
        # Not BaseException: that would also catch the SDK's workflow-eviction signal.
        except (Exception, asyncio.CancelledError) as error:
            reason = failure_reason(error)
            workflow.logger.info("swap %s failed: %s", request.order_id, reason)
            self._stage = SwapStage.COMPENSATING
            for compensate in reversed(compensations):
                await compensate(reason)
            await self._finish(SwapFinish(order_id=request.order_id, status=SwapStatus.FAILED, reason=reason))
            self._failure = reason
            if isinstance(error, asyncio.CancelledError):
                raise
        return self.progress()

    async def _swap(self, request: SwapRequest, compensations: list[Callable[[str], Awaitable[None]]]) -> None:
        admission = await workflow.execute_local_activity_method(SwapRecords.admit, request, **DB_STEP)
        self._admission = admission
        self._stage = SwapStage.RESERVED

        # Registered before the charge: a charge whose outcome is unknown is still refunded if it landed.
        compensations.append(self._refund)
        # A local activity: the sandbox provider answers at once, and it saves the swap a workflow task.
        await workflow.execute_local_activity_method(
            PaymentActivities.charge,
            ChargeInput(order_id=request.order_id, amount_minor=admission.price_minor, currency=admission.currency),
            **PAYMENT_STEP,
        )
        self._stage = SwapStage.PAID

        await self._command(CommandAction.OPEN_DOOR, admission.return_slot_no)
        compensations.append(self._close_return_door_if_empty)
        await self._record(SwapStage.RETURN_DOOR_OPEN, "open_return_door", f"slot {admission.return_slot_no}")

        inserted = await self._wait_for(DeviceSignalKind.BATTERY_INSERTED, admission.return_slot_no,
                                        request.return_insert_timeout_s, "battery_not_returned_in_time")
        await self._wait_for(DeviceSignalKind.DOOR_CLOSED, admission.return_slot_no,
                             request.return_insert_timeout_s, "return_door_not_closed")
        self._stage = SwapStage.RETURN_INSERTED
        # The cabinet reads the pack's BMS as it goes in; ask for a reading only if it sent none.
        reading = inserted.battery or (await self._command(CommandAction.READ_BMS, admission.return_slot_no)).battery
        if reading is None:
            raise SwapFailed("returned_battery_unreadable")
        verdict = await workflow.execute_local_activity_method(
            SwapRecords.accept_return,
            ReturnCheck(order_id=request.order_id, rider_id=request.rider_id, cabinet_id=request.cabinet_id,
                        slot_no=admission.return_slot_no, expected_serial=admission.rider_battery_serial,
                        reading=reading),
            **DB_STEP,
        )
        if not verdict.accepted:
            raise SwapFailed(verdict.reason or "returned_battery_rejected")
        self._stage = SwapStage.RETURN_VERIFIED

        await self._command(CommandAction.OPEN_DOOR, admission.charged_slot_no)
        await self._record(SwapStage.CHARGED_DOOR_OPEN, "open_charged_door", f"slot {admission.charged_slot_no}")
        await self._wait_for(DeviceSignalKind.BATTERY_REMOVED, admission.charged_slot_no,
                             request.charged_take_timeout_s, "charged_battery_not_taken")
        self._stage = SwapStage.CHARGED_TAKEN
        await self._door_closed_or_close(admission.charged_slot_no, request.charged_take_timeout_s)

        await self._finish(SwapFinish(order_id=request.order_id, status=SwapStatus.COMPLETED))

    async def _command(self, action: CommandAction, slot_no: int) -> DeviceSignal:
        """Send a command and wait for its acknowledgement; no ack in time or a refusal fails the swap."""
        self._commands_sent += 1
        command_id = f"{self._request.order_id}-{self._commands_sent}"
        timeout_s = self._request.command_ack_timeout_s
        await workflow.execute_local_activity_method(
            DeviceCommands.send,
            SendCommandInput(command_id=command_id, cabinet_id=self._request.cabinet_id, action=action,
                             slot_no=slot_no, workflow_id=workflow.info().workflow_id, timeout_s=timeout_s),
            **DB_STEP,
        )
        try:
            await workflow.wait_condition(lambda: command_id in self._acks, timeout=timedelta(seconds=timeout_s))
        except TimeoutError:
            raise SwapFailed(f"{action.value}_not_acknowledged") from None
        ack = self._acks[command_id]
        if not ack.ok:
            raise SwapFailed(f"{action.value}_refused: {ack.error or 'no reason given'}")
        return ack

    def _event(self, kind: DeviceSignalKind, slot_no: int) -> DeviceSignal | None:
        return next((e for e in self._events if e.kind == kind and e.slot_no == slot_no), None)

    async def _wait_for(self, kind: DeviceSignalKind, slot_no: int, timeout_s: float, reason: str) -> DeviceSignal:
        """The first `kind` event of the slot, waited for up to `timeout_s`; else the swap fails for `reason`."""
        try:
            await workflow.wait_condition(lambda: self._event(kind, slot_no) is not None,
                                          timeout=timedelta(seconds=timeout_s))
        except TimeoutError:
            raise SwapFailed(reason) from None
        event = self._event(kind, slot_no)
        assert event is not None
        return event

    async def _door_closed_or_close(self, slot_no: int, timeout_s: float) -> None:
        """The swap ends with the door shut: wait for the rider to close it, else close it by command."""
        try:
            await self._wait_for(DeviceSignalKind.DOOR_CLOSED, slot_no, timeout_s, "door_left_open")
        except SwapFailed:
            try:
                await self._command(CommandAction.CLOSE_DOOR, slot_no)
            except SwapFailed as failed:
                workflow.logger.warning("door %s of %s not closed: %s", slot_no, self._request.order_id, failed.reason)

    async def _record(self, stage: SwapStage, step: str, detail: str) -> None:
        await workflow.execute_local_activity_method(
            SwapRecords.record_stage,
            StageUpdate(order_id=self._request.order_id, stage=stage, step=step, detail=detail),
            **DB_STEP,
        )
        self._stage = stage

    async def _finish(self, finish: SwapFinish) -> None:
        await workflow.execute_local_activity_method(SwapRecords.finish, finish, **MUST_COMPLETE)
        self._status = finish.status
        self._stage = SwapStage.COMPLETED if finish.status == SwapStatus.COMPLETED else SwapStage.FAILED

    async def _refund(self, reason: str) -> None:
        await workflow.execute_activity_method(
            PaymentActivities.refund, RefundInput(order_id=self._request.order_id, reason=reason), **MUST_COMPLETE
        )

    async def _close_return_door_if_empty(self, _reason: str) -> None:
        """A door left open with no pack in it is closed; best effort, the slot stays as the cabinet reports."""
        assert self._admission is not None
        if self._event(DeviceSignalKind.BATTERY_INSERTED, self._admission.return_slot_no) is not None:
            return
        try:
            await self._command(CommandAction.CLOSE_DOOR, self._admission.return_slot_no)
        except SwapFailed as failed:
            workflow.logger.warning("return door of %s not closed: %s", self._request.order_id, failed.reason)
