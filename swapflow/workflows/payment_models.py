"""Pydantic models that cross the boundary of the refund and reconciliation workflows and their
activities. Imported by the worker and the API; holds no I/O."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict


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
    poll_schedule_s: tuple[float, ...] = (60.0, 300.0, 600.0, 1200.0, 1800.0)
    expected_days: int = 3
    max_submissions: int = 5


class RefundRef(_Model):
    """Names one refund, for the activities that act on it."""

    refund_id: str
    expected_days: int = 3
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
