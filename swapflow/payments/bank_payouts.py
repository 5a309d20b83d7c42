"""Payouts by bank transfer file: swapflow does not talk to the bank. `pay` puts the payout in the file
(AWAITING_BANK); finance downloads `bank_transfer_file`, sends it to the bank, and marks each payout paid
or returned (the settlement workflow's bank-result update, which records it on our `partner_payouts`
row). `find_payout` reads that row, so the row is the bank provider's own record.

A partner paid by bank keeps in `payout_details` (strings):
- `holder` (required): the account holder's name, as the bank knows it;
- `account_number` (required): IBAN, or the domestic account number;
- `bank`: the bank's name; `bank_code`: its BIC, or the domestic code (CNAPS, sort code …).

The file (`BANK_FILE_COLUMNS`): UTF-8 CSV, a header row, then one row per payout, oldest first:
- `payment_reference`: our payout key, which the bank carries to its statement (finance matches by it);
- `beneficiary_name`, `beneficiary_account` (spaces removed), `beneficiary_bank`, `beneficiary_bank_code`:
  from the partner's details;
- `amount`: major units with the currency's ISO 4217 decimals and a '.' (123456 CNY → 1234.56, 5000 JPY
  → 5000, 1234567 KWD → 1234.567), written from the integer minor units, never through a float;
- `currency`: ISO 4217 code;
- `remittance_information`: what the partner reads on its statement ("swapflow commission <period>
  <run id>"), at most 140 characters (SEPA's unstructured remittance limit).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Collection

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.commissions import Partner, PartnerPayout, SettlementRun
from swapflow.db.engine import Database
from swapflow.domain.errors import Conflict
from swapflow.payments.payouts import (
    FINAL_PAYOUT_STATUSES,
    PayoutMethod,
    PayoutRequest,
    PayoutStatus,
    ProviderPayout,
)
from swapflow.payments.provider import ProviderDeclined
from swapflow.settings import Settings

REQUIRED_DETAILS = ("holder", "account_number")
BANK_FILE_COLUMNS = (
    "payment_reference",
    "beneficiary_name",
    "beneficiary_account",
    "beneficiary_bank",
    "beneficiary_bank_code",
    "amount",
    "currency",
    "remittance_information",
)
_REMITTANCE_LIMIT = 140

# ISO 4217 minor-unit exponents other than 2.
_DECIMALS = {
    **dict.fromkeys(
        (
            "BIF",
            "CLP",
            "DJF",
            "GNF",
            "ISK",
            "JPY",
            "KMF",
            "KRW",
            "PYG",
            "RWF",
            "UGX",
            "VND",
            "VUV",
            "XAF",
            "XOF",
            "XPF",
        ),
        0,
    ),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
}

# Our row's status as the bank provider reports it: a row recorded but not yet answered is in the file.
_ROW_STATUSES = {
    "submitted": PayoutStatus.AWAITING_BANK,
    "awaiting_bank": PayoutStatus.AWAITING_BANK,
    "succeeded": PayoutStatus.SUCCEEDED,
    "failed": PayoutStatus.FAILED,
    "returned": PayoutStatus.RETURNED,
}


def major_units(amount_minor: int, currency: str) -> str:
    """`amount_minor` written in major units with the currency's decimals: 123456 CNY → "1234.56"."""
    decimals = _DECIMALS.get(currency.upper(), 2)
    whole, fraction = divmod(abs(amount_minor), 10**decimals)
    sign = "-" if amount_minor < 0 else ""
    return f"{sign}{whole}.{fraction:0{decimals}d}" if decimals else f"{sign}{whole}"


class BankPayoutProvider:
    """`PayoutProvider` for payouts finance sends to the bank in a transfer file."""

    method = PayoutMethod.BANK

    def __init__(self, db: Database) -> None:
        self._db = db

    async def pay(self, request: PayoutRequest) -> ProviderPayout:
        """Put the payout in the bank file: AWAITING_BANK. A payout already settled under the key (marked
        paid, returned or failed) is the answer."""
        existing = await self.find_payout(request.key)
        if existing is not None and existing.status in FINAL_PAYOUT_STATUSES:
            return existing
        missing = [name for name in REQUIRED_DETAILS if not request.details.get(name, "").strip()]
        if missing:
            raise ProviderDeclined(f"a bank transfer needs the partner's {' and '.join(missing)}")
        return ProviderPayout(
            method=self.method,
            key=request.key,
            payout_id=request.key,
            status=PayoutStatus.AWAITING_BANK,
            amount_minor=request.amount_minor,
            currency=request.currency.upper(),
        )

    async def find_payout(self, key: str) -> ProviderPayout | None:
        """The bank payout recorded under `key` (our `partner_payouts` row); None if there is none."""
        async with self._db.sessions() as session:
            row = await session.scalar(select(PartnerPayout).where(PartnerPayout.key == key))
        if row is None or row.method != self.method.value:
            return None
        return ProviderPayout(
            method=self.method,
            key=key,
            payout_id=row.provider_ref or key,  # the bank's reference once finance recorded one
            status=_ROW_STATUSES.get(row.status, PayoutStatus.AWAITING_BANK),
            amount_minor=row.amount_minor,
            currency=row.currency,
            failure_reason=row.failure_reason,
        )


async def bank_transfer_file(
    session: AsyncSession,
    *,
    run_ids: Collection[str] | None = None,
    statuses: Collection[PayoutStatus] = (PayoutStatus.AWAITING_BANK,),
) -> str:
    """The bank transfer file (columns: the module's docstring) of the bank payouts in `statuses` (those
    waiting for the bank, by default), of the runs `run_ids` if given. Raises `Conflict` if a partner in
    it lacks the bank details a transfer needs (changed since its payout was put in the file)."""
    query = (
        select(PartnerPayout, Partner, SettlementRun.period_label)
        .join(Partner, Partner.id == PartnerPayout.partner_id)
        .join(SettlementRun, SettlementRun.id == PartnerPayout.run_id)
        .where(PartnerPayout.method == PayoutMethod.BANK.value)
        .where(PartnerPayout.status.in_([status.value for status in statuses]))
        .order_by(PartnerPayout.created_at, PartnerPayout.id)
    )
    if run_ids is not None:
        query = query.where(PartnerPayout.run_id.in_(list(run_ids)))
    rows = (await session.execute(query)).all()
    lacking = [
        partner.id
        for _, partner, _ in rows
        if any(not str((partner.payout_details or {}).get(name, "")).strip() for name in REQUIRED_DETAILS)
    ]
    if lacking:
        raise Conflict(
            "Bank details missing",
            f"partners {', '.join(sorted(set(lacking)))} lack a holder or account number for the bank file",
        )
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(BANK_FILE_COLUMNS)
    for payout, partner, period_label in rows:
        details = {name: str(value).strip() for name, value in (partner.payout_details or {}).items()}
        writer.writerow(
            (
                payout.key,
                details["holder"],
                details["account_number"].replace(" ", ""),
                details.get("bank", ""),
                details.get("bank_code", ""),
                major_units(payout.amount_minor, payout.currency),
                payout.currency,
                f"swapflow commission {period_label} {payout.run_id}"[:_REMITTANCE_LIMIT],
            )
        )
    return out.getvalue()


def provider_from_settings(settings: Settings, db: Database) -> BankPayoutProvider:
    """The bank-file provider: always there, it needs no settings (only our database)."""
    return BankPayoutProvider(db)
