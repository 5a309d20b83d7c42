"""The settlement workflow's contract: its input, the updates finance sends it, its query and its state.
No I/O. The workflow `settlement/<partner>/<period label>` settles one partner's period once."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

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


def period_label_is_valid(label: str) -> bool:
    """Labels name periods in ids and URLs: no '/' and no ':' (which keys use as separators)."""
    return bool(label) and "/" not in label and ":" not in label


def settlement_workflow_id(partner_id: str, period_label: str) -> str:
    return f"settlement/{partner_id}/{period_label}"


def settlement_run_id(partner_id: str, period_label: str) -> str:
    """The run's id: also what the API names it by."""
    return f"{partner_id}-{period_label}"
