"""Where a swap starts and runs: the swap workflow, `swap/<order id>`.

admit (validate rider and cabinet, reserve a charged pack and an empty slot, price) → charge →
open the return door → the flat pack goes in → authenticate and safety-check it, take it into custody →
open the charged pack's door → the rider takes it → finish. Every wait is bounded. A failure at any
step runs the compensations of what succeeded, in reverse order, and ends the order as failed with its
reason; where a person must act, an alert is raised and the swap still ends.

How a step is confirmed depends on the cabinet (docs/protocol.md):
- a reporting cabinet acknowledges commands and reports door and battery events;
- a command-only (legacy) cabinet reports nothing: the packs' own telemetry is the evidence that the
  flat pack is in its slot and the charged pack has left its slot. Nothing is assumed from a command
  having been sent.

Deterministic orchestration only: all I/O is in activities (swapflow.activities).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ActivityError, ApplicationError, FailureError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from swapflow.domain.checks import present
    from swapflow.domain.network import CabinetCapability
    from swapflow.domain.refunds import RefundOrigin, swap_refund_id
    from swapflow.domain.swaps import SwapStage, SwapStatus
    from swapflow.protocol.v1 import IDLE_CURRENT_A, BatteryReading, CommandAction
    from swapflow.workflows.device_contract import (
        DEVICE_SIGNAL,
        CommandAnswer,
        DeviceSignal,
        DeviceSignalKind,
        SendCommandInput,
        send_device_command,
    )
    from swapflow.workflows.refund import RefundWorkflow
    from swapflow.workflows.refund_contract import RefundStart, refund_workflow_id
    from swapflow.workflows.reservation_contract import USED_SIGNAL, ReservationUsed, reservation_workflow_id
    from swapflow.workflows.swap_contract import (
        Admission,
        ChargeInput,
        CouponRelease,
        FaultReport,
        PaymentDeclinedError,
        ReplaceSlot,
        ReturnCheck,
        SlotRole,
        StageUpdate,
        SwapFinish,
        SwapProgress,
        SwapRequest,
        SwapStep,
        accept_returned_battery,
        admit_swap,
        charge_swap,
        finish_swap,
        record_swap_stage,
        release_swap_coupon,
        replace_swap_slot,
        report_swap_fault,
    )

# Short database steps: retried quickly, given up after a bound (about a minute) so the swap can
# compensate. The bound is in attempts, not a schedule-to-close timeout: local activity deadlines are
# kept on the worker's clock, and a schedule-to-close taken from a server clock that runs ahead (the
# time-skipping test server does) crashes the SDK core.
DB_STEP: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=10),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=5), maximum_attempts=15
    ),
}
# Compensations must happen, however long the outage: retried without a bound.
MUST_COMPLETE: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=30),
    "retry_policy": RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1)),
}
# The charge is a regular activity: a real provider may keep it pending for minutes (the rider confirms
# in the app) while it heartbeats. A lost answer is retried; the retry asks the provider first.
PAYMENT_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=12,
    non_retryable_error_types=[PaymentDeclinedError.TYPE],
)
PAYMENT_HEARTBEAT = timedelta(seconds=30)

# A swap priced 0 charged nothing (docs/money.md), so its failure starts no refund workflow.
FREE_SWAP_NOTHING_TO_REFUND = "free-swap-nothing-to-refund"

ADMITTED_STAGES = frozenset({SwapStage.CREATED, SwapStage.RESERVED, SwapStage.PAID})
# A command-only cabinet's return and issue need a second fact beside the pack's report (docs/protocol.md).
LEGACY_TWO_FACTS = "legacy-evidence-two-facts"
# A swap that used its rider's reservation tells the reservation's workflow, which then ends at once.
RESERVATION_USED = "reservation-used-signal"


class SwapFailed(Exception):
    """A step ended in a way that makes the swap fail; `reason` is what the rider and ops see."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NoAck(SwapFailed):
    """A command was not acknowledged within its bound (jammed door, lost command or ack)."""


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
    return f"internal_error: {type(error).__name__}: {error}"


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
        self._return_slot: int | None = None
        self._charged_slot: int | None = None
        self._returned = False  # the flat pack is in the cabinet
        self._removed: DeviceSignal | None = None  # the charged pack's removal event
        self._online = True
        self._seen: set[str] = set()
        self._events: list[DeviceSignal] = []
        self._steps: list[SwapStep] = []
        self._commands_sent = 0
        self._charge_declined = False  # the provider refused the charge: no money was taken

    # ---------------------------------------------------------------------------------- messages

    @workflow.signal(name=DEVICE_SIGNAL)
    def device_event(self, signal: DeviceSignal) -> None:
        """A device message about this swap; a repeated message changes nothing."""
        if signal.message_id in self._seen:
            return
        self._seen.add(signal.message_id)
        if signal.kind == DeviceSignalKind.CABINET_OFFLINE:
            self._online = False
        elif signal.kind == DeviceSignalKind.CABINET_ONLINE:
            self._online = True
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
        """Where the swap is now, each step's outcome, and the reason for a rollback."""
        return SwapProgress(
            order_id=self._request.order_id,
            status=self._status,
            stage=self._stage,
            return_slot_no=self._return_slot,
            charged_slot_no=self._charged_slot,
            failure_reason=self._failure,
            steps=tuple(self._steps),
        )

    # ---------------------------------------------------------------------------------- the swap

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
            self._step("rollback", "started", reason)
            self._stage = SwapStage.COMPENSATING
            for compensate in reversed(compensations):
                await compensate(reason)
            await self._finish(SwapFinish(order_id=request.order_id, status=SwapStatus.FAILED, reason=reason))
            self._failure = reason
            if isinstance(error, asyncio.CancelledError):
                raise
        return self.progress()

    async def _swap(self, request: SwapRequest, compensations: list[Callable[[str], Awaitable[None]]]) -> None:
        admission = await workflow.execute_local_activity(admit_swap, request, **DB_STEP)
        self._admission = admission
        self._return_slot, self._charged_slot = admission.return_slot_no, admission.charged_slot_no
        self._stage = SwapStage.RESERVED
        self._step("admit", "ok", f"return slot {self._return_slot}, charged slot {self._charged_slot}")
        if admission.coupon_code is not None:
            compensations.append(self._release_coupon)
        if admission.reservation_id is not None and workflow.patched(RESERVATION_USED):
            await self._reservation_used(admission.reservation_id)

        # Registered before the charge: a charge whose outcome is unknown is still refunded if it landed.
        compensations.append(self._refund)
        try:
            await workflow.execute_activity(
                charge_swap,
                ChargeInput(order_id=request.order_id, amount_minor=admission.price_minor, currency=admission.currency),
                start_to_close_timeout=timedelta(seconds=request.payment_pending_timeout_s + 60),
                heartbeat_timeout=PAYMENT_HEARTBEAT,
                retry_policy=PAYMENT_RETRY,
            )
        except ActivityError as error:
            if PaymentDeclinedError.caused(error):
                self._charge_declined = True
            raise
        self._stage = SwapStage.PAID
        self._step("charge", "ok", f"{admission.price_minor} {admission.currency}")

        compensations.append(self._close_return_door_if_empty)
        await self._open_door(SlotRole.RETURN)
        await self._record(SwapStage.RETURN_DOOR_OPEN, "open_return_door", f"slot {self._return_slot}")

        reading = await self._returned_pack()
        self._returned = True
        self._stage = SwapStage.RETURN_INSERTED
        verdict = await workflow.execute_local_activity(
            accept_returned_battery,
            ReturnCheck(
                order_id=request.order_id,
                rider_id=request.rider_id,
                cabinet_id=request.cabinet_id,
                slot_no=self._slot(SlotRole.RETURN),
                expected_serial=admission.rider_battery_serial,
                reading=reading,
            ),
            **DB_STEP,
        )
        if not verdict.accepted:
            self._step("verify_return", "rejected", verdict.reason)
            if verdict.quarantined:
                await self._command_best_effort(CommandAction.LOCK_SLOT, self._slot(SlotRole.RETURN))
            raise SwapFailed(verdict.reason or "returned_battery_rejected")
        self._stage = SwapStage.RETURN_VERIFIED
        self._step("verify_return", "ok", reading.serial)

        await self._open_door(SlotRole.CHARGED)
        await self._record(SwapStage.CHARGED_DOOR_OPEN, "open_charged_door", f"slot {self._charged_slot}")
        compensations.append(self._close_charged_door)
        await self._charged_pack_taken()
        self._stage = SwapStage.CHARGED_TAKEN
        self._step("take_charged", "ok", None)
        compensations.pop()  # the pack is gone: nothing to close behind a rider who took it
        if self._reporting:
            await self._door_closed_or_close(self._slot(SlotRole.CHARGED), request.charged_take_timeout_s)

        await self._finish(SwapFinish(order_id=request.order_id, status=SwapStatus.COMPLETED))

    # ---------------------------------------------------------------------------------- steps

    @property
    def _reporting(self) -> bool:
        admission = present(self._admission, "the swap's admission")
        return admission.capability == CabinetCapability.REPORTING

    def _slot(self, role: SlotRole) -> int:
        return present(self._return_slot if role == SlotRole.RETURN else self._charged_slot, f"{role} slot")

    async def _open_door(self, role: SlotRole) -> None:
        """Open the role's door. A door that does not acknowledge is a device fault: another slot takes
        the role, until none is left. A command-only cabinet cannot acknowledge: its door is confirmed
        later, by the pack's own report."""
        while True:
            slot = self._slot(role)
            if not self._reporting:
                await self._send(CommandAction.OPEN_DOOR, slot, self._next_command_id())
                return
            try:
                await self._command(CommandAction.OPEN_DOOR, slot)
                return
            except NoAck as failed:
                self._step(f"open_{role}_door", "no_ack", f"slot {slot}")
                replacement = await workflow.execute_local_activity(
                    replace_swap_slot,
                    ReplaceSlot(
                        order_id=self._request.order_id,
                        cabinet_id=self._request.cabinet_id,
                        role=role,
                        faulty_slot_no=slot,
                        reason=failed.reason,
                    ),
                    **DB_STEP,
                )
                if replacement.slot_no is None:
                    raise SwapFailed(f"no_working_{role}_slot") from None
                if role == SlotRole.RETURN:
                    self._return_slot = replacement.slot_no
                else:
                    self._charged_slot = replacement.slot_no

    async def _returned_pack(self) -> BatteryReading:
        """The flat pack in its slot, as its BMS reports it."""
        request, slot = self._request, self._slot(SlotRole.RETURN)
        if not self._reporting:
            find = self._evidence if workflow.patched(LEGACY_TWO_FACTS) else self._report
            report = await self._wait_for(
                lambda: find(slot, in_slot=True), request.return_insert_timeout_s, "return_not_confirmed"
            )
            battery = present(report.battery, f"reading of the pack reported in slot {slot}")
            await self._command_best_effort(CommandAction.CLOSE_DOOR, slot)
            return battery
        inserted = await self._wait_for(
            lambda: self._event(DeviceSignalKind.BATTERY_INSERTED, slot),
            request.return_insert_timeout_s,
            "battery_not_returned_in_time",
        )
        await self._wait_for(
            lambda: self._event(DeviceSignalKind.DOOR_CLOSED, slot, after=inserted),
            request.return_insert_timeout_s,
            "return_door_not_closed",
        )
        # The cabinet reads the pack's BMS as it goes in; ask for a reading only if it sent none.
        reading = inserted.battery or (await self._command(CommandAction.READ_BMS, slot)).battery
        if reading is None:
            raise SwapFailed("returned_battery_unreadable")
        return reading

    async def _charged_pack_taken(self) -> None:
        request, slot = self._request, self._slot(SlotRole.CHARGED)
        if self._reporting:
            self._removed = await self._wait_for(
                lambda: self._event(DeviceSignalKind.BATTERY_REMOVED, slot),
                request.charged_take_timeout_s,
                "charged_battery_not_taken",
            )
        else:
            find = self._evidence if workflow.patched(LEGACY_TWO_FACTS) else self._report
            await self._wait_for(
                lambda: find(slot, in_slot=False), request.charged_take_timeout_s, "charged_take_not_confirmed"
            )

    # ---------------------------------------------------------------------------------- waiting

    def _event(self, kind: DeviceSignalKind, slot_no: int, *, after: DeviceSignal | None = None) -> DeviceSignal | None:
        """The first `kind` event of the slot; with `after`, the first the cabinet stamped no earlier than it
        (a door closing before the pack went in does not close the door behind it)."""
        return next(
            (
                e
                for e in self._events
                if e.kind == kind and e.slot_no == slot_no and (after is None or e.at >= after.at)
            ),
            None,
        )

    def _report(self, slot_no: int, *, in_slot: bool) -> DeviceSignal | None:
        return next(iter(self._reports(slot_no, in_slot=in_slot)), None)

    def _reports(self, slot_no: int, *, in_slot: bool) -> list[DeviceSignal]:
        return [
            e
            for e in self._events
            if e.kind == DeviceSignalKind.BATTERY_REPORT
            and e.slot_no == slot_no
            and e.in_slot is in_slot
            and e.battery is not None
        ]

    def _evidence(self, slot_no: int, *, in_slot: bool) -> DeviceSignal | None:
        """A pack's report that it is in (or has left) the slot, and a second fact: its reading shows the
        slot's charger feeding it (out of the slot: no charging current), or a second report of the same
        pack says the same. One report alone, as a cabinet could make up, is not evidence."""
        reports = self._reports(slot_no, in_slot=in_slot)
        for report in reports:
            battery = present(report.battery, f"reading of a report from slot {slot_no}")  # _reports keeps read ones
            if (battery.current_a > IDLE_CURRENT_A) is in_slot:
                return report
        return next(
            (
                report
                for i, report in enumerate(reports)
                if any(earlier.battery_serial == report.battery_serial for earlier in reports[:i])
            ),
            None,
        )

    async def _wait_for(self, find: Callable[[], DeviceSignal | None], timeout_s: float, reason: str) -> DeviceSignal:
        """What `find` finds, waited for up to `timeout_s` of the cabinet being online (else SwapFailed).
        While the cabinet is offline the clock stops, up to the offline grace; past it the swap fails."""
        remaining = timeout_s
        while True:
            started = workflow.now()
            try:
                await workflow.wait_condition(
                    lambda: find() is not None or not self._online, timeout=timedelta(seconds=remaining)
                )
            except TimeoutError:
                raise SwapFailed(reason) from None
            found = find()
            if found is not None:
                return found
            remaining -= (workflow.now() - started).total_seconds()
            await self._while_offline(find)
            remaining = max(remaining, 1.0)

    async def _while_offline(self, find: Callable[[], DeviceSignal | None] = lambda: None) -> None:
        """The cabinet is offline: wait for it to come back (or for what `find` finds) up to the offline
        grace; past it the swap fails."""
        self._step("cabinet", "offline", f"waiting up to {self._request.offline_grace_s:.0f}s")
        try:
            await workflow.wait_condition(
                lambda: self._online or find() is not None, timeout=timedelta(seconds=self._request.offline_grace_s)
            )
        except TimeoutError:
            await self._report_fault(
                "cabinet_offline_mid_swap", "warning", f"cabinet went offline during swap {self._request.order_id}"
            )
            raise SwapFailed("cabinet_offline_mid_swap") from None
        self._step("cabinet", "online", None)

    def _next_command_id(self) -> str:
        """A new command id, deterministic: the order id and a counter."""
        self._commands_sent += 1
        return f"{self._request.order_id}-{self._commands_sent}"

    async def _send(
        self, action: CommandAction, slot_no: int, command_id: str, ack_wait_s: float = 0.0
    ) -> CommandAnswer:
        """Record and publish a command; with `ack_wait_s`, the activity also waits that long for the ack."""
        return await workflow.execute_local_activity(
            send_device_command,
            SendCommandInput(
                command_id=command_id,
                cabinet_id=self._request.cabinet_id,
                action=action,
                slot_no=slot_no,
                workflow_id=workflow.info().workflow_id,
                timeout_s=self._request.command_ack_timeout_s,
                ack_wait_s=ack_wait_s,
            ),
            **DB_STEP,
        )

    async def _command(self, action: CommandAction, slot_no: int) -> CommandAnswer:
        """Send a command and wait for its ack, resending it (same id: the cabinet acts once) a bounded
        number of times. The ack is awaited inside the sending activity, not as a signal: an open door
        costs the swap no workflow task of its own. While the cabinet is offline the attempts wait for
        it. No ack raises NoAck; a refusal fails the swap."""
        request = self._request
        command_id = self._next_command_id()
        attempts = max(1, request.command_attempts)
        for attempt in range(1, attempts + 1):
            answer = await self._send(action, slot_no, command_id, request.command_ack_timeout_s / attempts)
            if answer.acked:
                break
            if attempt == attempts:
                raise NoAck(f"{action.value}_not_acknowledged")
            # A short timer ends the workflow task, so signals that came during the wait (the cabinet
            # going offline) are taken in before the next attempt.
            await workflow.sleep(timedelta(milliseconds=10))
            if not self._online:
                await self._while_offline()
        if not answer.ok:
            raise SwapFailed(f"{action.value}_refused: {answer.error or 'no reason given'}")
        return answer

    async def _command_best_effort(self, action: CommandAction, slot_no: int) -> None:
        """A command whose failure must not change how the swap ends (it is logged as a step)."""
        try:
            if self._reporting and self._online:
                await self._command(action, slot_no)
            else:  # nobody to hear it now: it waits on the broker until its deadline
                await self._send(action, slot_no, self._next_command_id())
        except SwapFailed as failed:
            self._step(action.value, "failed", failed.reason)

    async def _door_closed_or_close(self, slot_no: int, timeout_s: float) -> None:
        """The swap ends with the door shut: wait for the rider to close it, else close it by command."""
        try:
            await self._wait_for(
                lambda: self._event(DeviceSignalKind.DOOR_CLOSED, slot_no, after=self._removed),
                timeout_s,
                "door_left_open",
            )
        except SwapFailed:
            await self._command_best_effort(CommandAction.CLOSE_DOOR, slot_no)

    # ---------------------------------------------------------------------------------- records

    def _step(self, step: str, outcome: str, detail: str | None) -> None:
        self._steps.append(SwapStep(step=step, outcome=outcome, detail=detail, at=workflow.now()))

    async def _record(self, stage: SwapStage, step: str, detail: str) -> None:
        await workflow.execute_local_activity(
            record_swap_stage,
            StageUpdate(order_id=self._request.order_id, stage=stage, step=step, detail=detail),
            **DB_STEP,
        )
        self._stage = stage
        self._step(step, "ok", detail)

    async def _report_fault(self, kind: str, severity: str, message: str, slot_no: int | None = None) -> None:
        await workflow.execute_local_activity(
            report_swap_fault,
            FaultReport(
                kind=kind,
                severity=severity,
                cabinet_id=self._request.cabinet_id,
                message=message,
                order_id=self._request.order_id,
                slot_no=slot_no,
            ),
            **MUST_COMPLETE,
        )

    async def _finish(self, finish: SwapFinish) -> None:
        await workflow.execute_local_activity(finish_swap, finish, **MUST_COMPLETE)
        self._status = finish.status
        self._stage = SwapStage.COMPLETED if finish.status == SwapStatus.COMPLETED else SwapStage.FAILED
        self._step("finish", finish.status.value, finish.reason)

    async def _reservation_used(self, reservation_id: str) -> None:
        """Tell the reservation's workflow that this swap took its pack, so it ends now. The admission already
        marked the reservation used: a workflow that ended meanwhile (its timer) found it so."""
        try:
            await workflow.get_external_workflow_handle(reservation_workflow_id(reservation_id)).signal(
                USED_SIGNAL, ReservationUsed(order_id=self._request.order_id)
            )
        except FailureError as failed:
            self._step("reservation_used", "not_signalled", failed.message)
            return
        self._step("reservation_used", "ok", reservation_id)

    # ---------------------------------------------------------------------------------- compensations

    async def _refund(self, reason: str) -> None:
        """Start the swap's refund workflow and go on: the money takes days to land, the swap must not wait.
        A child workflow (abandoned when the swap closes) rather than an activity that starts one: its
        start is recorded in the swap's history, and the id derived from the order means one failure can
        never start two refunds. The refund workflow itself settles a charge whose outcome is unknown."""
        free = self._admission is not None and self._admission.price_minor == 0
        if self._charge_declined or (free and workflow.patched(FREE_SWAP_NOTHING_TO_REFUND)):
            self._step("refund", "nothing_captured", None)
            return
        request = self._request
        refund_id = swap_refund_id(request.order_id)
        try:
            await workflow.start_child_workflow(
                RefundWorkflow.run,
                RefundStart(
                    refund_id=refund_id,
                    order_id=request.order_id,
                    reason=reason,
                    origin=RefundOrigin.SWAP_COMPENSATION,
                    poll_schedule_s=request.refund_poll_schedule_s,
                    expected_days=request.refund_expected_days,
                ),
                id=refund_workflow_id(refund_id),
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            )
        except WorkflowAlreadyStartedError:
            pass  # this swap's refund already ran (say, the swap was reset): never a second one
        self._step("refund", "started", refund_id)

    async def _release_coupon(self, reason: str) -> None:
        """The rider gets back the coupon the failed swap redeemed."""
        await workflow.execute_local_activity(
            release_swap_coupon, CouponRelease(order_id=self._request.order_id, reason=reason), **MUST_COMPLETE
        )
        self._step("release_coupon", "ok", self._admission.coupon_code if self._admission else None)

    async def _close_return_door_if_empty(self, reason: str) -> None:
        """A return door left open with no pack in it is closed; the rider keeps the pack."""
        if self._returned:
            return
        if not self._reporting and reason == "return_not_confirmed":
            await self._report_fault(
                "operator_check",
                "warning",
                f"no evidence of the return in slot {self._return_slot}: check the slot",
                self._return_slot,
            )
        await self._command_best_effort(CommandAction.CLOSE_DOOR, self._slot(SlotRole.RETURN))

    async def _close_charged_door(self, reason: str) -> None:
        """The rider did not take the charged pack: close its door; the pack stays in the cabinet."""
        slot = self._slot(SlotRole.CHARGED)
        if not self._reporting and reason == "charged_take_not_confirmed":
            await self._report_fault(
                "operator_check", "warning", f"no evidence that the pack left slot {slot}: check the slot", slot
            )
        await self._command_best_effort(CommandAction.CLOSE_DOOR, slot)
