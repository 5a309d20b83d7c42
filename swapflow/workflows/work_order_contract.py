"""The work-order workflow's contract: its input, id, updates, query, and its activities' arguments
and results. No I/O."""

from __future__ import annotations

from temporalio import activity

from swapflow.domain import timing
from swapflow.domain.ops import WorkOrderStatus
from swapflow.workflows.contract import Contract


def work_order_workflow_id(work_order_id: str) -> str:
    """The workflow of a work order: derived from its id, so opening it twice starts it once."""
    return f"workorder/{work_order_id}"


class WorkOrderInput(Contract):
    """Input of the work-order workflow; its SLA travels with it, so it is in its history."""

    work_order_id: str
    cabinet_id: str
    slot_no: int | None
    city_code: str
    severity: str
    kind: str
    reporting: bool = True  # a command-only cabinet cannot answer a test command
    ack_s: float
    resolve_s: float
    verify_ack_timeout_s: float = timing.VERIFY_ACK_TIMEOUT_S


class WorkOrderStep(Contract):
    """One step of a work order for its timeline, with the row changes it makes."""

    work_order_id: str
    seq: int
    kind: str
    actor: str | None = None
    detail: str = ""
    status: WorkOrderStatus | None = None
    technician_id: str | None = None
    clear_technician: bool = False
    acked: bool = False
    closed: bool = False
    reopened: bool = False


class DispatchRequest(Contract):
    """Pick a technician (`technician_id`, or the nearest on duty not in `exclude`) and record it."""

    work_order_id: str
    seq: int
    actor: str | None = None
    technician_id: str | None = None
    exclude: tuple[str, ...] = ()


class DispatchResult(Contract):
    technician_id: str | None
    distance_km: float | None = None


class EscalationRequest(Contract):
    work_order_id: str
    seq: int
    timer: str  # ack | resolve
    limit_s: float


class LiveCheck(Contract):
    """What the live state says about the fixed device."""

    work_order_id: str
    problems: tuple[str, ...] = ()
    test_slot_no: int | None = None  # the slot the test command goes to


class Accept(Contract):
    actor: str


class Resolve(Contract):
    actor: str
    note: str = ""


class Reassign(Contract):
    actor: str
    technician_id: str | None = None  # None: the nearest other technician on duty


class Cancel(Contract):
    actor: str
    reason: str = ""


class WorkOrderState(Contract):
    """The work order as its workflow sees it (query and update result)."""

    work_order_id: str
    status: WorkOrderStatus
    technician_id: str | None
    escalations: tuple[str, ...] = ()
    reopen_count: int = 0
    last_verification: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------- activities
# The work order's activities, by name and types: a workflow calls these, never the implementations
# the worker registers (swapflow.activities), so their I/O stays out of the sandbox.


@activity.defn(name="record_work_order_step")
async def record_work_order_step(step: WorkOrderStep) -> None:
    """Record a step in a work order's timeline."""
    raise NotImplementedError


@activity.defn(name="dispatch_work_order")
async def dispatch_work_order(request: DispatchRequest) -> DispatchResult:
    """Assign a work order to a technician (the nearest on duty unless one is named)."""
    raise NotImplementedError


@activity.defn(name="escalate_work_order")
async def escalate_work_order(request: EscalationRequest) -> str | None:
    """Escalate a work order whose deadline passed to the city's lead."""
    raise NotImplementedError


@activity.defn(name="check_work_order_live_state")
async def check_work_order_live_state(work_order_id: str) -> LiveCheck:
    """What the work order's device still reports wrong."""
    raise NotImplementedError


@activity.defn(name="close_work_order")
async def close_work_order(step: WorkOrderStep) -> None:
    """Record the closing step of a work order and close it."""
    raise NotImplementedError
