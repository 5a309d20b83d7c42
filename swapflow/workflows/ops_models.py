"""Pydantic models crossing the boundary of the ops workflows (the alert evaluator and work orders):
inputs, updates, activity arguments and results. No I/O."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from temporalio import activity

from swapflow.domain import timing
from swapflow.domain.ops import WorkOrderStatus

EVALUATOR_WORKFLOW_ID = "ops/alert-evaluator"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


def work_order_workflow_id(work_order_id: str) -> str:
    """The workflow of a work order: derived from its id, so opening it twice starts it once."""
    return f"workorder/{work_order_id}"


class EvaluatorInput(_Model):
    """The evaluator's loop: evaluate every `interval_s`, continue-as-new after `per_run` rounds."""

    interval_s: float = 15.0
    per_run: int = 200
    webhook_attempts: int = 5


class EvaluateInput(_Model):
    round: int


class AlertDeliveryRequest(_Model):
    """Push one alert event (opened | resolved) to one channel."""

    alert_id: int
    event: str
    channel: str


class WorkOrderInput(_Model):
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


class Evaluation(_Model):
    """What one round of the alert rules did, and what the evaluator must do next."""

    opened: int = 0
    resolved: int = 0
    deliveries: tuple[AlertDeliveryRequest, ...] = ()
    work_orders: tuple[WorkOrderInput, ...] = ()


class WorkOrderStep(_Model):
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


class DispatchRequest(_Model):
    """Pick a technician (`technician_id`, or the nearest on duty not in `exclude`) and record it."""

    work_order_id: str
    seq: int
    actor: str | None = None
    technician_id: str | None = None
    exclude: tuple[str, ...] = ()


class DispatchResult(_Model):
    technician_id: str | None
    distance_km: float | None = None


class EscalationRequest(_Model):
    work_order_id: str
    seq: int
    timer: str  # ack | resolve
    limit_s: float


class LiveCheck(_Model):
    """What the live state says about the fixed device."""

    work_order_id: str
    problems: tuple[str, ...] = ()
    test_slot_no: int | None = None  # the slot the test command goes to


class Accept(_Model):
    actor: str


class Resolve(_Model):
    actor: str
    note: str = ""


class Reassign(_Model):
    actor: str
    technician_id: str | None = None  # None: the nearest other technician on duty


class Cancel(_Model):
    actor: str
    reason: str = ""


class WorkOrderState(_Model):
    """The work order as its workflow sees it (query and update result)."""

    work_order_id: str
    status: WorkOrderStatus
    technician_id: str | None
    escalations: tuple[str, ...] = ()
    reopen_count: int = 0
    last_verification: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------- activities
# The activities of the alert evaluator and work order workflows, by name and types: a workflow calls
# these, never the implementations the worker registers (OpsActivities in swapflow.activities.ops), so
# their database and network I/O stays out of the sandbox.


@activity.defn(name="evaluate_alert_rules")
async def evaluate_alert_rules(request: EvaluateInput) -> Evaluation:
    """Run one round of the alert rules."""
    raise NotImplementedError


@activity.defn(name="deliver_alert")
async def deliver_alert(request: AlertDeliveryRequest) -> None:
    """Post one alert to one webhook channel."""
    raise NotImplementedError


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
