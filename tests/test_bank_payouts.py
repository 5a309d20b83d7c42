"""Payouts by bank transfer file, on the real database: `pay` puts a payout in the file (after checking
the partner's bank details), `find_payout` reads our payout row as finance marked it, and the file has a
bank's bulk-transfer columns with amounts written exactly from minor units in the currency's decimals."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest

from swapflow.db.commissions import Partner, PartnerPayout, SettlementRun
from swapflow.db.engine import Database
from swapflow.domain.errors import Conflict
from swapflow.payments.bank_payouts import (
    BANK_FILE_COLUMNS,
    BankPayoutProvider,
    bank_transfer_file,
    major_units,
    provider_from_settings,
)
from swapflow.payments.payouts import (
    PayoutMethod,
    PayoutProvider,
    PayoutRequest,
    PayoutStatus,
    payout_key,
)
from swapflow.payments.provider import ProviderDeclined
from swapflow.settings import Settings

PERIOD = "2026-11"
START = datetime(2026, 11, 1, tzinfo=UTC)
DETAILS = {
    "holder": "Wang Fang",
    "account_number": "6222 0202 0000 1234 567",
    "bank": "ICBC Shanghai Branch",
    "bank_code": "ICBKCNBJSHI",
}


@pytest.fixture
def provider(db: Database) -> BankPayoutProvider:
    return BankPayoutProvider(db)


async def add_partner(db: Database, partner_id: str, details: dict[str, str], currency: str = "CNY") -> None:
    async with db.transaction() as session:
        session.add(
            Partner(
                id=partner_id,
                kind="station_host",
                name=f"Partner {partner_id}",
                cities=["SH"],
                time_zone="Asia/Shanghai",
                currency=currency,
                payout_method="bank",
                payout_details=details,
            )
        )


async def add_payout(
    db: Database,
    partner_id: str,
    amount_minor: int,
    *,
    currency: str = "CNY",
    status: str = "awaiting_bank",
    method: str = "bank",
    attempt: int = 1,
    created_at: datetime | None = None,
    provider_ref: str | None = None,
    failure_reason: str | None = None,
) -> PartnerPayout:
    """A run of `partner_id` for PERIOD (made on its first payout) and its `attempt`-th payout."""
    run_id = f"{partner_id}-{PERIOD}"
    async with db.transaction() as session:
        if await session.get(SettlementRun, run_id) is None:
            session.add(
                SettlementRun(
                    id=run_id,
                    partner_id=partner_id,
                    period_label=PERIOD,
                    period_start=START,
                    period_end=START + timedelta(days=30),
                    currency=currency,
                    status="paying",
                    workflow_id=f"settlement/{partner_id}/{PERIOD}",
                    total_minor=amount_minor,
                    prepared_by="schedule",
                )
            )
            await session.flush()
        payout = PartnerPayout(
            key=payout_key(run_id, attempt),
            run_id=run_id,
            attempt=attempt,
            partner_id=partner_id,
            method=method,
            amount_minor=amount_minor,
            currency=currency,
            status=status,
            provider_ref=provider_ref,
            failure_reason=failure_reason,
            created_at=created_at or datetime.now(UTC),
        )
        session.add(payout)
    return payout


def payout_request(partner_id: str = "host-sh-01", **changes: object) -> PayoutRequest:
    request = PayoutRequest(
        key=payout_key(f"{partner_id}-{PERIOD}", 1),
        partner_id=partner_id,
        amount_minor=123_456,
        currency="CNY",
        details=DETAILS,
    )
    return request.model_copy(update=changes)


def parsed(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


# ---- the provider ----


def test_provider_implements_the_payout_provider_interface(provider: BankPayoutProvider) -> None:
    assert isinstance(provider, PayoutProvider)
    assert provider.method is PayoutMethod.BANK


def test_provider_needs_no_settings(db: Database) -> None:
    assert isinstance(provider_from_settings(Settings(), db), BankPayoutProvider)


async def test_pay_puts_the_payout_in_the_bank_file(provider: BankPayoutProvider) -> None:
    request = payout_request()
    payout = await provider.pay(request)
    assert (payout.status, payout.payout_id, payout.amount_minor, payout.currency) == (
        PayoutStatus.AWAITING_BANK,
        request.key,
        123_456,
        "CNY",
    )


@pytest.mark.parametrize("missing", ["holder", "account_number"])
async def test_pay_without_the_holder_or_account_number_is_declined(provider: BankPayoutProvider, missing: str) -> None:
    details = {name: value for name, value in DETAILS.items() if name != missing}
    with pytest.raises(ProviderDeclined, match=missing):
        await provider.pay(payout_request(details=details))


async def test_find_payout_of_an_unknown_key_is_none(provider: BankPayoutProvider) -> None:
    assert await provider.find_payout(payout_key(f"nobody-{PERIOD}", 1)) is None


async def test_a_payout_waiting_in_the_file_is_found_awaiting_the_bank(
    provider: BankPayoutProvider, db: Database
) -> None:
    await add_partner(db, "host-sh-01", DETAILS)
    row = await add_payout(db, "host-sh-01", 123_456)
    payout = await provider.find_payout(row.key)
    assert payout is not None
    assert (payout.status, payout.payout_id, payout.amount_minor) == (PayoutStatus.AWAITING_BANK, row.key, 123_456)


async def test_a_payout_finance_marked_paid_is_succeeded_under_the_banks_reference(
    provider: BankPayoutProvider, db: Database
) -> None:
    await add_partner(db, "host-sh-01", DETAILS)
    row = await add_payout(db, "host-sh-01", 123_456, status="succeeded", provider_ref="ICBC-20261205-0042")
    payout = await provider.find_payout(row.key)
    assert payout is not None
    assert (payout.status, payout.payout_id) == (PayoutStatus.SUCCEEDED, "ICBC-20261205-0042")
    assert await provider.pay(payout_request()) == payout  # the same key never pays twice


async def test_a_payout_the_bank_returned_is_returned_with_the_reason(
    provider: BankPayoutProvider, db: Database
) -> None:
    await add_partner(db, "host-sh-01", DETAILS)
    row = await add_payout(db, "host-sh-01", 123_456, status="returned", failure_reason="account closed")
    payout = await provider.find_payout(row.key)
    assert payout is not None
    assert (payout.status, payout.failure_reason) == (PayoutStatus.RETURNED, "account closed")


async def test_a_payout_by_another_method_is_not_the_banks(provider: BankPayoutProvider, db: Database) -> None:
    await add_partner(db, "host-sh-01", DETAILS)
    row = await add_payout(db, "host-sh-01", 123_456, method="wechat", status="processing")
    assert await provider.find_payout(row.key) is None


# ---- amounts ----


@pytest.mark.parametrize(
    ("minor", "currency", "written"),
    [
        (123_456, "CNY", "1234.56"),
        (5, "CNY", "0.05"),
        (100, "eur", "1.00"),
        (5_000, "JPY", "5000"),
        (1_234_567, "KWD", "1234.567"),
        (2**53 + 1, "USD", "90071992547409.93"),  # past where a float keeps whole cents
        (-1_050, "EUR", "-10.50"),
    ],
)
def test_amounts_are_written_in_major_units_with_the_currencys_decimals(
    minor: int, currency: str, written: str
) -> None:
    assert major_units(minor, currency) == written


# ---- the file ----


async def test_the_file_has_a_banks_bulk_transfer_columns_and_one_row_per_waiting_payout(db: Database) -> None:
    await add_partner(db, "host-sh-01", DETAILS)
    row = await add_payout(db, "host-sh-01", 123_456)
    async with db.sessions() as session:
        text = await bank_transfer_file(session)
    assert text.splitlines()[0] == ",".join(BANK_FILE_COLUMNS)
    assert parsed(text) == [
        {
            "payment_reference": row.key,
            "beneficiary_name": "Wang Fang",
            "beneficiary_account": "6222020200001234567",
            "beneficiary_bank": "ICBC Shanghai Branch",
            "beneficiary_bank_code": "ICBKCNBJSHI",
            "amount": "1234.56",
            "currency": "CNY",
            "remittance_information": f"swapflow commission {PERIOD} host-sh-01-{PERIOD}",
        }
    ]


async def test_the_file_holds_only_bank_payouts_waiting_for_the_bank_oldest_first(db: Database) -> None:
    now = datetime.now(UTC)
    for partner_id in ("host-a", "host-b", "host-c", "host-d", "agent-e"):
        await add_partner(db, partner_id, DETAILS)
    later = await add_payout(db, "host-a", 100, created_at=now)
    earlier = await add_payout(db, "host-b", 200, created_at=now - timedelta(hours=1))
    await add_payout(db, "host-c", 300, status="succeeded", provider_ref="ICBC-1")
    await add_payout(db, "host-d", 400, status="returned", failure_reason="account closed")
    await add_payout(db, "agent-e", 500, method="wechat", status="processing")
    async with db.sessions() as session:
        text = await bank_transfer_file(session)
    assert [line["payment_reference"] for line in parsed(text)] == [earlier.key, later.key]


async def test_the_file_can_be_cut_to_some_runs_and_statuses(db: Database) -> None:
    for partner_id in ("host-a", "host-b", "host-c"):
        await add_partner(db, partner_id, DETAILS)
    await add_payout(db, "host-a", 100)
    chosen = await add_payout(db, "host-b", 200)
    paid = await add_payout(db, "host-c", 300, status="succeeded", provider_ref="ICBC-1")
    async with db.sessions() as session:
        by_run = await bank_transfer_file(session, run_ids=[chosen.run_id, paid.run_id])
        by_status = await bank_transfer_file(session, statuses=[PayoutStatus.SUCCEEDED])
    assert [line["payment_reference"] for line in parsed(by_run)] == [chosen.key]
    assert [line["payment_reference"] for line in parsed(by_status)] == [paid.key]


async def test_the_file_writes_each_payouts_currency_with_its_decimals(db: Database) -> None:
    await add_partner(db, "host-jp", DETAILS, currency="JPY")
    await add_partner(db, "host-kw", DETAILS, currency="KWD")
    await add_payout(db, "host-jp", 5_000, currency="JPY")
    await add_payout(db, "host-kw", 1_234_567, currency="KWD")
    async with db.sessions() as session:
        text = await bank_transfer_file(session)
    assert sorted((line["amount"], line["currency"]) for line in parsed(text)) == [
        ("1234.567", "KWD"),
        ("5000", "JPY"),
    ]


async def test_a_partner_without_bank_details_stops_the_file_with_a_conflict(db: Database) -> None:
    await add_partner(db, "host-sh-01", {"holder": "Wang Fang"})
    await add_payout(db, "host-sh-01", 123_456)
    async with db.sessions() as session:
        with pytest.raises(Conflict, match="host-sh-01"):
            await bank_transfer_file(session)
