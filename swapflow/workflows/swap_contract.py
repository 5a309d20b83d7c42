"""The swap workflow's contract: its input, its workflow id, its activities' arguments and results,
its query and its error types. Imported by the worker, the API and the device adapter; no I/O."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from temporalio import activity

from swapflow.domain import timing
from swapflow.domain.network import CabinetCapability
from swapflow.domain.swaps import SwapStage, SwapStatus
from swapflow.protocol.v1 import BatteryReading
from swapflow.workflows.contract import Contract, ContractError


def swap_workflow_id(order_id: str) -> str:
    """The workflow id of a swap: derived from its order, so a retry never starts a second one."""
    return f"swap/{order_id}"


class SwapRequest(Contract):
    """Input of the swap workflow. The bounds of its waits travel with it, so they are in its history."""

    order_id: str
    rider_id: str
    cabinet_id: str
    command_ack_timeout_s: float = timing.COMMAND_ACK_TIMEOUT_S
    command_attempts: int = timing.COMMAND_ATTEMPTS  # sends of one command (same id) within command_ack_timeout_s
    return_insert_timeout_s: float = timing.RETURN_INSERT_TIMEOUT_S
    charged_take_timeout_s: float = timing.CHARGED_TAKE_TIMEOUT_S
    offline_grace_s: float = timing.OFFLINE_GRACE_S
    coupon_code: str | None = None  # as the rider gave it; admission redeems it if it still applies
    payment_pending_timeout_s: float = timing.PAYMENT_PENDING_TIMEOUT_S  # a pending charge is closed after this
    refund_poll_schedule_s: tuple[float, ...] = timing.REFUND_POLL_SCHEDULE_S
    refund_expected_days: int = timing.REFUND_EXPECTED_DAYS


class Admission(Contract):
    """What admitting a swap reserved: the slot the flat pack goes into, the charged pack it gets, the price."""

    return_slot_no: int
    charged_slot_no: int
    charged_battery_serial: str
    rider_battery_serial: str
    price_minor: int
    currency: str
    capability: CabinetCapability = CabinetCapability.REPORTING
    coupon_code: str | None = None  # the coupon redeemed for this swap: released if the swap fails
    reservation_id: str | None = None  # the rider's reservation at the cabinet this swap used (its pack held)


class CouponRelease(Contract):
    """Give back the coupon a failed swap redeemed."""

    order_id: str
    reason: str


class SlotRole(StrEnum):
    RETURN = "return"  # the empty slot the flat pack goes into
    CHARGED = "charged"  # the slot whose charged pack the rider takes


class ReplaceSlot(Contract):
    """A reserved slot's door failed: record the fault and reserve another slot for the same role."""

    order_id: str
    cabinet_id: str
    role: SlotRole
    faulty_slot_no: int
    reason: str


class SlotReplacement(Contract):
    slot_no: int | None  # None: no other slot could take the role
    battery_serial: str | None = None  # the charged pack of a new charged slot


class FaultReport(Contract):
    """Something a person must look at, raised by a swap (an alert; later a work order)."""

    kind: str
    severity: str
    cabinet_id: str
    message: str
    order_id: str | None = None
    slot_no: int | None = None
    battery_serial: str | None = None


class StageUpdate(Contract):
    """One step's outcome, recorded on the order so the rider and ops see the swap live."""

    order_id: str
    stage: SwapStage
    step: str
    outcome: str = "ok"
    detail: str | None = None


class ChargeInput(Contract):
    order_id: str
    amount_minor: int
    currency: str


class PaymentResult(Contract):
    payment_ref: str
    amount_minor: int


class RefundInput(Contract):
    order_id: str
    reason: str


class RefundResult(Contract):
    refund_ref: str | None
    amount_minor: int


class ReturnCheck(Contract):
    """The returned pack as its BMS reported it, to be authenticated and taken into the cabinet."""

    order_id: str
    rider_id: str
    cabinet_id: str
    slot_no: int
    expected_serial: str
    reading: BatteryReading


class ReturnVerdict(Contract):
    accepted: bool
    reason: str | None = None
    quarantined: bool = False  # the pack is held, locked in its slot


class SwapFinish(Contract):
    """How a swap ends: completed, or failed with the reason."""

    order_id: str
    status: SwapStatus
    reason: str | None = None


class SwapStep(Contract):
    """One step of a swap and how it went, as the workflow saw it."""

    step: str
    outcome: str
    detail: str | None = None
    at: datetime


class SwapProgress(Contract):
    """What the API's update-with-start returns to the rider, and the swap's query result."""

    order_id: str
    status: SwapStatus
    stage: SwapStage
    return_slot_no: int | None = None
    charged_slot_no: int | None = None
    failure_reason: str | None = None
    steps: tuple[SwapStep, ...] = ()


# ---------------------------------------------------------------------------------- activities
# The activities of the swap workflow and of a workflow's device commands, by name and types: a workflow
# calls these, never the implementations the worker registers (SwapRecords, PaymentActivities and
# DeviceCommands in swapflow.activities), so their database and network I/O stays out of the sandbox.


class SwapRejectedError(ContractError):
    """A swap refused before any money moved (the reason is the message)."""

    TYPE = "SwapRejected"


class PaymentDeclinedError(ContractError):
    """A charge the provider refused (not retried: no money can be taken)."""

    TYPE = "PaymentDeclined"


class PaymentOutcomeUnknownError(ContractError):
    """A charge whose answer was lost: retried, and the retry asks the provider first."""

    TYPE = "PaymentOutcomeUnknown"
    NON_RETRYABLE = False


class UnknownOrderError(ContractError):
    """A charge for an order that does not exist."""

    TYPE = "UnknownOrder"


@activity.defn(name="admit_swap")
async def admit_swap(request: SwapRequest) -> Admission:
    """Reserve the swap's slots and packs and price it (or reject the swap)."""
    raise NotImplementedError


@activity.defn(name="charge_swap")
async def charge_swap(charge: ChargeInput) -> PaymentResult:
    """Charge the swap's price through the rider's provider (or PaymentDeclinedError)."""
    raise NotImplementedError


@activity.defn(name="record_swap_stage")
async def record_swap_stage(update: StageUpdate) -> None:
    """Record the stage a swap reached."""
    raise NotImplementedError


@activity.defn(name="accept_returned_battery")
async def accept_returned_battery(check: ReturnCheck) -> ReturnVerdict:
    """Check the returned pack and take it into the cabinet's custody."""
    raise NotImplementedError


@activity.defn(name="replace_swap_slot")
async def replace_swap_slot(request: ReplaceSlot) -> SlotReplacement:
    """Take a faulty slot out of the swap and reserve another one."""
    raise NotImplementedError


@activity.defn(name="release_swap_coupon")
async def release_swap_coupon(release: CouponRelease) -> None:
    """Give back the coupon a failed swap redeemed."""
    raise NotImplementedError


@activity.defn(name="report_swap_fault")
async def report_swap_fault(report: FaultReport) -> None:
    """Raise an alert about a fault a swap ran into."""
    raise NotImplementedError


@activity.defn(name="finish_swap")
async def finish_swap(finish: SwapFinish) -> None:
    """Record how the swap ended and move custody and money accordingly."""
    raise NotImplementedError
