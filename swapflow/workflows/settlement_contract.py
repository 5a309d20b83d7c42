"""The settlement workflow's contract: its input, the updates finance sends it, its query and its state.
No I/O. The workflow `settlement/<partner>/<period label>` settles one partner's period once."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field
from temporalio import activity

from swapflow.domain.commissions import Cadence
from swapflow.workflows.contract import Contract, ContractError


class RunStatus(StrEnum):
    """Where a settlement run is (`settlement_runs.status`)."""

    COMPUTING = "computing"  # freezing the period's accruals and computing the statement
    AWAITING_APPROVAL = "awaiting_approval"  # recorded; finance approves or rejects
    REJECTED = "rejected"  # finance said no; waits for corrections and a recompute
    APPROVED = "approved"  # about to pay
    PAYING = "paying"  # a payout is out; followed until final
    PAID = "paid"  # the partner has the money
    PAYOUT_FAILED = "payout_failed"  # the payout failed or came back; still owed; finance may retry
    NOTHING_DUE = "nothing_due"  # nothing to pay this period (all carried forward)


SETTLEMENT_DECIDE_UPDATE = "decide"
"""Finance approves or rejects a run awaiting approval (`SettlementDecision` → `SettlementState`)."""
SETTLEMENT_RECOMPUTE_UPDATE = "recompute"
"""Finance asks a rejected run to recompute after corrections (`SettlementActor` → `SettlementState`)."""
SETTLEMENT_RETRY_PAYOUT_UPDATE = "retry_payout"
"""Finance asks a run whose payout failed to pay again, as a new payout (`SettlementActor`)."""
SETTLEMENT_BANK_RESULT_UPDATE = "bank_result"
"""Finance says how a bank-transfer payout ended: paid, with the bank's reference, or returned (`BankResult`)."""
SETTLEMENT_STATE_QUERY = "state"


class SettlementRefusedError(ContractError):
    """A step that cannot be done (no such partner, a period not yet over): not retried."""

    TYPE = "SettlementRefused"


class SettlementForbiddenError(ContractError):
    """An update the asker may not send: an approval by who prepared the run or a plan version it used."""

    TYPE = "SettlementForbidden"


class SettlementConflictError(ContractError):
    """An update the run is not waiting for (approving a paid run, retrying a payout that did not fail)."""

    TYPE = "SettlementConflict"


class SettlementInvalidError(ContractError):
    """An update that cannot be taken as sent (a rejection without a reason)."""

    TYPE = "SettlementInvalid"


class PayoutOutcomeUnknownError(ContractError):
    """A payout submission whose answer was lost and the provider does not show yet: retried, and the
    retry asks the provider first."""

    TYPE = "PayoutOutcomeUnknown"
    NON_RETRYABLE = False


class SettlementStart(Contract):
    """Input of `settlement/<partner>/<period label>`."""

    run_id: str
    partner_id: str
    period_label: str
    period_start: datetime
    period_end: datetime
    prepared_by: str = Field(description="'schedule', or the account that started it by hand")
    remind_after_s: float = Field(description="Unapproved this long: finance is reminded (an alert)")
    payout_poll_schedule_s: tuple[float, ...] = (60.0, 300.0, 900.0, 1800.0, 3600.0)


class SettlementActor(Contract):
    """Who asks (an operator account id)."""

    by: str = Field(min_length=1)


class SettlementDecision(SettlementActor):
    approve: bool
    reason: str = ""


class BankResult(SettlementActor):
    paid: bool
    reference: str = Field(min_length=1, description="The bank's reference, or why it came back")


class SettlementState(Contract):
    """The run as its workflow sees it (the query's and every update's answer)."""

    run_id: str
    status: RunStatus
    revision: int = 1
    total_minor: int = 0
    currency: str = ""
    prepared_by: str = ""
    plan_edited_by: tuple[str, ...] = Field((), description="Who prepared the plan versions it used (four eyes)")
    payout_attempt: int = 0
    payout_status: str | None = None
    failure_reason: str | None = None


class FreezeRequest(Contract):
    """Freeze the run's period and compute its statement as revision `revision` (a recompute when > 1,
    asked by `by`)."""

    start: SettlementStart
    revision: int = Field(ge=1)
    by: str


class DecisionRecord(Contract):
    run_id: str
    revision: int
    decision: SettlementDecision


class Reminder(Contract):
    """The run has waited `waited_s` for approval (the `number`th reminder)."""

    run_id: str
    partner_id: str
    period_label: str
    waited_s: float
    number: int


class PayoutRef(Contract):
    """A run's `attempt`th payout; `by` is who asked for a retry (attempt > 1)."""

    run_id: str
    attempt: int = Field(ge=1)
    by: str = ""


class PayoutProgress(Contract):
    """A payout as our `partner_payouts` row holds it, after asking the provider."""

    run_id: str
    attempt: int
    key: str
    status: str = Field(description="submitted | a PayoutStatus")
    failure_reason: str | None = None


class BankResultRecord(Contract):
    run_id: str
    attempt: int
    result: BankResult


class DueRequest(Contract):
    """Which partners of plans on `cadence` have a closed period to settle."""

    cadence: Cadence


class DueResult(Contract):
    started: tuple[str, ...] = Field((), description="Workflow ids started now")
    running: tuple[str, ...] = Field((), description="Already started (by hand, or an earlier tick)")


# ---------------------------------------------------------------------------------- activities
# By name and types: the workflows call these; the worker registers swapflow.activities.settlement's.


@activity.defn(name="freeze_settlement")
async def freeze_settlement(request: FreezeRequest) -> SettlementState:
    """Assign the period's accruals and pending clawbacks to the run, compute and record its statement."""
    raise NotImplementedError


@activity.defn(name="record_settlement_decision")
async def record_settlement_decision(record: DecisionRecord) -> None:
    """Record finance's approval or rejection of a revision."""
    raise NotImplementedError


@activity.defn(name="remind_settlement")
async def remind_settlement(reminder: Reminder) -> None:
    """Remind finance of a run awaiting approval (an alert)."""
    raise NotImplementedError


@activity.defn(name="submit_settlement_payout")
async def submit_settlement_payout(ref: PayoutRef) -> PayoutProgress:
    """Pay the run's total under the attempt's key (once, whatever the retries)."""
    raise NotImplementedError


@activity.defn(name="poll_settlement_payout")
async def poll_settlement_payout(ref: PayoutRef) -> PayoutProgress:
    """Ask the provider where the payout is."""
    raise NotImplementedError


@activity.defn(name="record_bank_result")
async def record_bank_result(record: BankResultRecord) -> PayoutProgress:
    """Record how finance says a bank transfer ended."""
    raise NotImplementedError


@activity.defn(name="settle_settlement_payout")
async def settle_settlement_payout(ref: PayoutRef) -> None:
    """Book a succeeded payout (payable → cash) and mark the run paid."""
    raise NotImplementedError


@activity.defn(name="fail_settlement_payout")
async def fail_settlement_payout(ref: PayoutRef) -> None:
    """Mark the run's payout failed (still owed) and alert finance."""
    raise NotImplementedError


@activity.defn(name="settlements_due")
async def settlements_due(request: DueRequest) -> list[SettlementStart]:
    """The runs to start: per partner on the cadence, its earliest closed period with something to settle
    and no run."""
    raise NotImplementedError


def period_label_is_valid(label: str) -> bool:
    """Labels name periods in ids and URLs: no '/' and no ':' (which keys use as separators)."""
    return bool(label) and "/" not in label and ":" not in label


def settlement_workflow_id(partner_id: str, period_label: str) -> str:
    return f"settlement/{partner_id}/{period_label}"


def settlement_run_id(partner_id: str, period_label: str) -> str:
    """The run's id: also what the API names it by."""
    return f"{partner_id}-{period_label}"


def settlements_due_workflow_id(cadence: Cadence) -> str:
    """The workflow a cadence's schedule starts on each tick (the schedule appends the tick's time)."""
    return f"settlements-due/{cadence.name}"
