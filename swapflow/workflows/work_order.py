"""A device work order, `workorder/<id>`: dispatch → accept → fix → verify → close.

Opened by an alert rule (through the alert evaluator), by a swap's fault (its alert), or by an operator.
It is dispatched to the nearest technician on duty in the cabinet's city. SLA timers per severity run
from the opening: when the ack or the resolve deadline passes, the order is escalated to the city's ops
lead (once per timer). The technician accepts and resolves through the API (updates). A resolution is
not taken on trust: the workflow checks the live state (the cabinet online, the slot's fault cleared)
and that the door answers test commands (unlock, open, close; the device command activity sends each
and waits for its ack), and only then puts the slot back in service and closes; otherwise the order
is reopened. Cancel and reassign are updates too. Every step is in this history and, through a local
activity, in the `work_order_events` timeline.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from swapflow.domain.ops import WorkOrderStatus
    from swapflow.protocol.v1 import CommandAction
    from swapflow.workflows.device_contract import CommandAnswer, SendCommandInput, send_device_command
    from swapflow.workflows.swap import DB_STEP
    from swapflow.workflows.work_order_contract import (
        Accept,
        Cancel,
        DispatchRequest,
        EscalationRequest,
        Reassign,
        Resolve,
        WorkOrderInput,
        WorkOrderState,
        WorkOrderStep,
        check_work_order_live_state,
        close_work_order,
        dispatch_work_order,
        escalate_work_order,
        record_work_order_step,
    )

_COMMAND_ATTEMPTS = 3  # sends of one test command (same id) within its timeout
_SLOT_TEST = (CommandAction.UNLOCK_SLOT, CommandAction.OPEN_DOOR, CommandAction.CLOSE_DOOR)
_TERMINAL = (WorkOrderStatus.CLOSED, WorkOrderStatus.CANCELLED)


@workflow.defn(name="WorkOrder")
class WorkOrderWorkflow:
    """One work order, until it is verified fixed and closed, or cancelled."""

    @workflow.init
    def __init__(self, request: WorkOrderInput) -> None:
        self._request = request
        self._status = WorkOrderStatus.NEW
        self._technician: str | None = None
        self._seq = 0
        self._accept: Accept | None = None
        self._resolve: Resolve | None = None
        self._reassign: Reassign | None = None
        self._cancel: Cancel | None = None
        self._escalated: list[str] = []
        self._reopened = 0
        self._last_verification: tuple[str, ...] = ()
        self._commands = 0

    # ---------------------------------------------------------------------------------- messages

    @workflow.query(name="state")
    def state(self) -> WorkOrderState:
        return WorkOrderState(
            work_order_id=self._request.work_order_id,
            status=self._status,
            technician_id=self._technician,
            escalations=tuple(self._escalated),
            reopen_count=self._reopened,
            last_verification=self._last_verification,
        )

    def _open(self) -> None:
        if self._status in _TERMINAL or self._cancel is not None:
            raise ValueError(f"work order is {self._status.value}")

    def _assignee(self, actor: str) -> None:
        if actor != self._technician:
            raise ValueError(f"work order is assigned to {self._technician or 'nobody'}, not {actor}")

    @workflow.update(name="accept")
    async def accept(self, accept: Accept) -> WorkOrderState:
        """The assigned technician takes the order (the SLA's ack)."""
        self._accept = accept
        await workflow.wait_condition(lambda: self._accept is None)
        return self.state()

    @accept.validator
    def _validate_accept(self, accept: Accept) -> None:
        self._open()
        self._assignee(accept.actor)
        if self._status != WorkOrderStatus.DISPATCHED or self._accept is not None:
            raise ValueError(f"work order is {self._status.value}, not waiting for an accept")

    @workflow.update(name="resolve")
    async def resolve(self, resolve: Resolve) -> WorkOrderState:
        """The technician says it is fixed; returns once verification has started."""
        self._resolve = resolve
        await workflow.wait_condition(lambda: self._resolve is None)
        return self.state()

    @resolve.validator
    def _validate_resolve(self, resolve: Resolve) -> None:
        self._open()
        self._assignee(resolve.actor)
        if self._status != WorkOrderStatus.ACCEPTED or self._resolve is not None:
            raise ValueError(f"work order is {self._status.value}, not accepted")

    @workflow.update(name="reassign")
    async def reassign(self, reassign: Reassign) -> WorkOrderState:
        """Give the order to another technician (named, or the nearest other one on duty)."""
        self._reassign = reassign
        await workflow.wait_condition(lambda: self._reassign is None)
        return self.state()

    @reassign.validator
    def _validate_reassign(self, reassign: Reassign) -> None:
        self._open()
        if self._status == WorkOrderStatus.VERIFYING or self._reassign is not None:
            raise ValueError(f"work order is {self._status.value}")

    @workflow.update(name="cancel")
    async def cancel(self, cancel: Cancel) -> WorkOrderState:
        self._cancel = cancel
        await workflow.wait_condition(lambda: self._status in _TERMINAL)
        return self.state()

    @cancel.validator
    def _validate_cancel(self, cancel: Cancel) -> None:
        self._open()

    # ---------------------------------------------------------------------------------- the order

    def _pending(self) -> bool:
        return any(p is not None for p in (self._accept, self._resolve, self._reassign, self._cancel))

    @workflow.run
    async def run(self, request: WorkOrderInput) -> WorkOrderState:
        opened = workflow.now()
        deadlines = {
            "ack": opened + timedelta(seconds=request.ack_s),
            "resolve": opened + timedelta(seconds=request.resolve_s),
        }
        await self._step(
            "opened",
            f"{request.kind} ({request.severity}); SLA: ack {request.ack_s:.0f} s, resolve {request.resolve_s:.0f} s",
            status=WorkOrderStatus.NEW,
        )
        await self._dispatch(None, None, ())
        while True:
            if self._cancel is not None:
                await self._step(
                    "cancelled", self._cancel.reason, actor=self._cancel.actor, status=WorkOrderStatus.CANCELLED
                )
                return self.state()
            if self._reassign is not None:
                reassign, previous = self._reassign, self._technician
                await self._dispatch(
                    reassign.actor,
                    reassign.technician_id,
                    (previous,) if previous and reassign.technician_id is None else (),
                )
                deadlines["ack"] = workflow.now() + timedelta(seconds=request.ack_s)
                if "ack" in self._escalated:
                    self._escalated.remove("ack")
                self._reassign = None
                continue
            if self._accept is not None:
                await self._step("accepted", "", actor=self._accept.actor, status=WorkOrderStatus.ACCEPTED, acked=True)
                self._accept = None
                continue
            if self._resolve is not None:
                resolve = self._resolve
                await self._step("resolved", resolve.note, actor=resolve.actor, status=WorkOrderStatus.VERIFYING)
                self._resolve = None
                problems = await self._verify()
                self._last_verification = tuple(problems)
                if not problems:
                    await self._step(
                        "closed", "verified: device healthy", status=WorkOrderStatus.CLOSED, closed=True, close=True
                    )
                    return self.state()
                self._reopened += 1
                await self._step(
                    "reopened",
                    "verification failed: " + "; ".join(problems),
                    status=WorkOrderStatus.ACCEPTED,
                    reopened=True,
                )
                continue
            await self._wait(deadlines)

    async def _wait(self, deadlines: dict[str, datetime]) -> None:
        """Wait for the next update, escalating when an SLA timer that still runs fires first."""
        running = {
            timer: at
            for timer, at in deadlines.items()
            if timer not in self._escalated
            and not (timer == "ack" and self._status not in (WorkOrderStatus.DISPATCHED, WorkOrderStatus.UNASSIGNED))
        }
        if not running:
            await workflow.wait_condition(self._pending)
            return
        timer = min(running, key=lambda t: running[t])
        remaining = (running[timer] - workflow.now()).total_seconds()
        if remaining > 0:
            try:
                await workflow.wait_condition(self._pending, timeout=timedelta(seconds=remaining))
                return
            except TimeoutError:
                pass
        self._escalated.append(timer)
        self._seq += 1
        limit = self._request.ack_s if timer == "ack" else self._request.resolve_s
        await workflow.execute_local_activity(
            escalate_work_order,
            EscalationRequest(work_order_id=self._request.work_order_id, seq=self._seq, timer=timer, limit_s=limit),
            **DB_STEP,
        )

    async def _dispatch(self, actor: str | None, technician_id: str | None, exclude: tuple[str, ...]) -> None:
        self._seq += 1
        result = await workflow.execute_local_activity(
            dispatch_work_order,
            DispatchRequest(
                work_order_id=self._request.work_order_id,
                seq=self._seq,
                actor=actor,
                technician_id=technician_id,
                exclude=exclude,
            ),
            **DB_STEP,
        )
        self._technician = result.technician_id
        self._status = WorkOrderStatus.DISPATCHED if result.technician_id else WorkOrderStatus.UNASSIGNED

    async def _step(
        self,
        kind: str,
        detail: str,
        *,
        actor: str | None = None,
        status: WorkOrderStatus,
        acked: bool = False,
        closed: bool = False,
        reopened: bool = False,
        close: bool = False,
    ) -> None:
        """Record a step in the timeline (and close the order, with `close`), then take its status."""
        self._seq += 1
        step = WorkOrderStep(
            work_order_id=self._request.work_order_id,
            seq=self._seq,
            kind=kind,
            actor=actor,
            detail=detail,
            status=status,
            acked=acked,
            closed=closed,
            reopened=reopened,
        )
        activity = close_work_order if close else record_work_order_step
        await workflow.execute_local_activity(activity, step, **DB_STEP)
        self._status = status

    # ---------------------------------------------------------------------------------- verification

    async def _verify(self) -> list[str]:
        """What is still wrong; empty when the device is verified healthy."""
        request = self._request
        check = await workflow.execute_local_activity(check_work_order_live_state, request.work_order_id, **DB_STEP)
        problems = list(check.problems)
        if problems or not request.reporting or check.test_slot_no is None:
            return problems
        # A slot must unlock, open and close on command; for a cabinet-wide order any answer will do.
        actions = _SLOT_TEST if request.slot_no is not None else (CommandAction.READ_BMS,)
        for action in actions:
            ack = await self._test_command(action, check.test_slot_no)
            if ack is None:
                return [f"{action.value} on slot {check.test_slot_no} not acknowledged"]
            if request.slot_no is not None and not ack.ok:
                return [f"{action.value} on slot {check.test_slot_no} refused: {ack.error or 'no reason'}"]
        return []

    async def _test_command(self, action: CommandAction, slot_no: int) -> CommandAnswer | None:
        """Send a test command, resending the same id a bounded number of times; its ack or None."""
        self._commands += 1
        command_id = f"{self._request.work_order_id}-t{self._commands}"[:60]
        for _ in range(_COMMAND_ATTEMPTS):
            answer: CommandAnswer = await workflow.execute_local_activity(
                send_device_command,
                SendCommandInput(
                    command_id=command_id,
                    cabinet_id=self._request.cabinet_id,
                    action=action,
                    slot_no=slot_no,
                    workflow_id=workflow.info().workflow_id,
                    timeout_s=self._request.verify_ack_timeout_s,
                    ack_wait_s=self._request.verify_ack_timeout_s / _COMMAND_ATTEMPTS,
                ),
                **DB_STEP,
            )
            if answer.acked:
                return answer
        return None
