"""The refund workflow's contract: its input, its activities' arguments and results, its query. No I/O."""

from __future__ import annotations

from temporalio import activity

from swapflow.domain import timing
from swapflow.workflows.contract import Contract, ContractError


class RefundRefusedError(ContractError):
    """A refund that cannot be made (no such refund, no order, nothing opened): not retried."""

    TYPE = "RefundRefused"


class RefundOutcomeUnknownError(ContractError):
    """A refund submission whose answer was lost: retried, and the retry asks the provider first."""

    TYPE = "RefundOutcomeUnknown"
    NON_RETRYABLE = False


class RefundStart(Contract):
    """Input of the refund workflow `refund/<refund_id>`. A swap's compensation names only its order: the
    workflow opens the refund of whatever the swap's charge captured (maybe nothing). The API opens the
    refund row itself (it answers the operator at once) and starts the workflow with `opened=True`."""

    refund_id: str
    order_id: str | None = None
    reason: str
    origin: str
    opened: bool = False
    poll_schedule_s: tuple[float, ...] = timing.REFUND_POLL_SCHEDULE_S
    expected_days: int = timing.REFUND_EXPECTED_DAYS
    max_submissions: int = 5


class RefundRef(Contract):
    """Names one refund, for the activities that act on it."""

    refund_id: str
    expected_days: int = timing.REFUND_EXPECTED_DAYS
    attempt: int = 1  # the submission number the workflow is on; a higher one resubmits with a new key


class RefundPlan(Contract):
    """The refund the workflow follows (None when the swap had nothing captured)."""

    refund_id: str
    amount_minor: int
    currency: str
    status: str
    attempt: int
    key: str


class RefundProgress(Contract):
    """The refund workflow's query result: where it is."""

    refund_id: str
    state: str
    key: str | None
    attempt: int
    polls: int


class RefundUpdate(Contract):
    """The provider's view of the refund's current submission, after our row was updated from it."""

    refund_id: str
    key: str
    attempt: int
    provider_status: str | None  # None: the provider has no such refund (yet)
    state: str  # our RefundState


class RefundOutcome(Contract):
    """How a refund workflow ended."""

    refund_id: str
    state: str  # succeeded | escalated | nothing_to_refund
    amount_minor: int = 0
    attempts: int = 0
    polls: int = 0


# ---------------------------------------------------------------------------------- activities
# The refund's activities, by name and types: the workflow calls these, never the implementations the
# worker registers (swapflow.activities.refund), so their database and network I/O stays out of the sandbox.

REFUND_DECLINED = "declined"
"""provider_status of a refund submission the provider refused outright."""


@activity.defn(name="prepare_refund")
async def prepare_refund(start: RefundStart) -> RefundPlan | None:
    """Open the refund (or find it) and say what the workflow follows."""
    raise NotImplementedError


@activity.defn(name="submit_refund")
async def submit_refund(ref: RefundRef) -> RefundUpdate:
    """Submit the refund to its provider (again, with a new key, on a higher attempt)."""
    raise NotImplementedError


@activity.defn(name="poll_refund")
async def poll_refund(ref: RefundRef) -> RefundUpdate:
    """Ask the provider where the refund is."""
    raise NotImplementedError


@activity.defn(name="settle_refund")
async def settle_refund(ref: RefundRef) -> RefundUpdate:
    """Book a refund the provider paid out."""
    raise NotImplementedError


@activity.defn(name="escalate_refund")
async def escalate_refund(ref: RefundRef) -> RefundUpdate:
    """Hand an abnormal or failed refund to finance."""
    raise NotImplementedError


def refund_workflow_id(refund_id: str) -> str:
    """Workflow id of the refund workflow that follows refund `refund_id` until the money is back."""
    return f"refund/{refund_id}"
