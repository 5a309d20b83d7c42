"""The payout interface: how swapflow pays a partner what a settlement run owes it. Like the payment
providers beside it, nothing provider-specific crosses it: amounts are integer minor units, `key` is our
business key (`settlement:<run id>:payout[:<attempt>]`), used as WeChat's `out_batch_no` / Stripe's
idempotency key, so the same key never pays twice.

- `pay` answers PROCESSING (WeChat merchant transfer, sandbox: follow with `find_payout` until final),
  SUCCEEDED (Stripe Connect transfers land at once) or AWAITING_BANK (a bank-transfer file: finance sends
  it and marks the payout paid or returned).
- Errors are the payment providers': `ProviderDeclined` (final), `ProviderUnavailable` (retry with the
  same key), `ProviderTimeout` (outcome unknown: ask `find_payout` before deciding).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, Field


class PayoutMethod(StrEnum):
    """How a partner is paid; each is one payout provider."""

    WECHAT = "wechat"  # WeChat Pay v3 merchant transfer to the partner's openid
    STRIPE = "stripe"  # Stripe Connect transfer to the partner's connected account
    BANK = "bank"  # a line in the bank-transfer file finance sends
    SANDBOX = "sandbox"  # our own provider with real state, for the demo and tests


class PayoutStatus(StrEnum):
    PROCESSING = "processing"  # accepted, not landed yet
    AWAITING_BANK = "awaiting_bank"  # in the bank file; finance marks it paid or returned
    SUCCEEDED = "succeeded"  # the partner has the money
    FAILED = "failed"  # the provider refused or gave up: nothing was paid
    RETURNED = "returned"  # paid out, then came back (account closed …): nothing was paid in the end


FINAL_PAYOUT_STATUSES = frozenset({PayoutStatus.SUCCEEDED, PayoutStatus.FAILED, PayoutStatus.RETURNED})


class PayoutRequest(BaseModel):
    """One payout to one partner. `account` is the provider's handle for the partner (WeChat openid,
    Stripe connected account id); `details` what a bank transfer needs (holder, bank, account number)."""

    key: str
    partner_id: str
    amount_minor: int = Field(gt=0)
    currency: str
    account: str | None = None
    details: dict[str, str] = Field(default_factory=dict)
    description: str = "swapflow commission"


class ProviderPayout(BaseModel):
    """A payout as the provider reports it."""

    method: PayoutMethod
    key: str
    payout_id: str  # the provider's id (WeChat batch id, Stripe transfer id, …)
    status: PayoutStatus
    amount_minor: int
    currency: str
    failure_reason: str | None = None


@runtime_checkable
class PayoutProvider(Protocol):
    """One way of paying partners. Implementations live beside this file."""

    method: PayoutMethod

    async def pay(self, request: PayoutRequest) -> ProviderPayout:
        """Pay under `request.key` (the same key returns the first answer and never pays twice)."""
        ...

    async def find_payout(self, key: str) -> ProviderPayout | None:
        """The payout made under `key`, as the provider sees it now; None if it never happened."""
        ...


def payout_key(run_id: str, attempt: int) -> str:
    """Idempotency key of a run's `attempt`-th payout: a retry after a final failure is a new payout."""
    return f"settlement:{run_id}:payout" if attempt <= 1 else f"settlement:{run_id}:payout:{attempt}"
