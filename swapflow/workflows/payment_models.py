"""Pydantic models that cross the boundary of the refund and reconciliation workflows and their
activities. Imported by the worker and the API; holds no I/O."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict
from temporalio import activity

from swapflow.domain import timing


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class RefundStart(_Model):
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


class RefundRef(_Model):
    """Names one refund, for the activities that act on it."""

    refund_id: str
    expected_days: int = timing.REFUND_EXPECTED_DAYS
    attempt: int = 1  # the submission number the workflow is on; a higher one resubmits with a new key


class RefundPlan(_Model):
    """The refund the workflow follows (None when the swap had nothing captured)."""

    refund_id: str
    amount_minor: int
    currency: str
    status: str
    attempt: int
    key: str


class RefundProgress(_Model):
    """The refund workflow's query result: where it is."""

    refund_id: str
    state: str
    key: str | None
    attempt: int
    polls: int


class RefundUpdate(_Model):
    """The provider's view of the refund's current submission, after our row was updated from it."""

    refund_id: str
    key: str
    attempt: int
    provider_status: str | None  # None: the provider has no such refund (yet)
    state: str  # our RefundState


class RefundOutcome(_Model):
    """How a refund workflow ended."""

    refund_id: str
    state: str  # succeeded | escalated | nothing_to_refund
    amount_minor: int = 0
    attempts: int = 0
    polls: int = 0


class ReconcileInput(_Model):
    """Reconcile one UTC day; None: the day before the workflow's start."""

    day: date | None = None


class ReconcileProvider(_Model):
    day: date
    provider: str


class ProviderReconciliation(_Model):
    provider: str
    ours: int
    theirs: int
    matched: int
    exceptions: int


class ReconciliationReport(_Model):
    day: date
    providers: tuple[ProviderReconciliation, ...]
    ran_at: datetime | None = None


class TopUpStart(_Model):
    """Input of workflow `topup/<top_up_id>`."""

    top_up_id: str
    pending_timeout_s: float = 900.0


class TopUpOutcome(_Model):
    """How a top-up ended: `succeeded` (credited) or `failed` (nothing taken, nothing credited)."""

    top_up_id: str
    status: str
    amount_minor: int = 0
    reason: str | None = None


# ---------------------------------------------------------------------------------- activities
# The activities of the refund, reconciliation and top-up workflows, by name and types: a workflow calls
# these, never the implementations the worker registers (RefundActivities, ReconciliationActivities and
# TopUpActivities in swapflow.activities), so their database and network I/O stays out of the sandbox.

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


@activity.defn(name="reconcile_day")
async def reconcile_day(request: ReconcileProvider) -> ReconciliationReport:
    """Compare a day's payments and refunds with the providers' statements."""
    raise NotImplementedError


@activity.defn(name="collect_top_up")
async def collect_top_up(start: TopUpStart) -> None:
    """Collect a top-up's payment through the rider's provider (or PAYMENT_DECLINED)."""
    raise NotImplementedError


@activity.defn(name="settle_top_up")
async def settle_top_up(start: TopUpStart) -> TopUpOutcome:
    """Credit the wallet if the provider captured the money; else void the payment."""
    raise NotImplementedError
