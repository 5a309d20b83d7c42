"""Settlement periods (pure): the period of a cadence an instant falls in, in the partner's time zone,
its label, the one before it, and a label read back."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from swapflow.domain.commissions import (
    Cadence,
    CadenceKind,
    Period,
    period_containing,
    period_of_label,
    previous_period,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")  # UTC+8, no daylight saving
BERLIN = ZoneInfo("Europe/Berlin")
MONTHLY = Cadence(kind=CadenceKind.MONTHLY)
WEEKLY = Cadence(kind=CadenceKind.WEEKLY)
QUARTER_HOURS = Cadence(kind=CadenceKind.MINUTES, minutes=15)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def test_a_month_runs_from_the_first_at_local_midnight() -> None:
    period = period_containing(utc(2026, 12, 7, 14, 30), MONTHLY, SHANGHAI)
    assert (period.start, period.end, period.label) == (utc(2026, 11, 30, 16), utc(2026, 12, 31, 16), "2026-12")


def test_the_local_date_decides_the_month_not_the_utc_one() -> None:
    # 20:00 UTC on 30 November is 04:00 on 1 December in Shanghai.
    assert period_containing(utc(2026, 11, 30, 20), MONTHLY, SHANGHAI).label == "2026-12"
    assert period_containing(utc(2026, 11, 30, 15, 59), MONTHLY, SHANGHAI).label == "2026-11"


def test_a_week_is_an_iso_week_from_monday_at_local_midnight() -> None:
    period = period_containing(utc(2026, 12, 10, 12), WEEKLY, SHANGHAI)  # a Thursday
    assert (period.start, period.end, period.label) == (utc(2026, 12, 6, 16), utc(2026, 12, 13, 16), "2026-W50")


def test_a_week_across_new_year_takes_its_iso_year() -> None:
    # Thursday 1 January 2026 is in ISO week 1 of 2026, which began on Monday 29 December 2025.
    period = period_containing(utc(2026, 1, 1, 12), WEEKLY, SHANGHAI)
    assert (period.start, period.label) == (utc(2025, 12, 28, 16), "2026-W01")


def test_minutes_are_counted_from_local_midnight() -> None:
    period = period_containing(utc(2026, 12, 7, 6, 44, 59), QUARTER_HOURS, SHANGHAI)  # 14:44:59 local
    assert (period.start, period.end, period.label) == (
        utc(2026, 12, 7, 6, 30),
        utc(2026, 12, 7, 6, 45),
        "2026-12-07T1430",
    )


def test_the_last_slice_of_a_day_ends_at_the_next_midnight() -> None:
    seven = Cadence(kind=CadenceKind.MINUTES, minutes=420)  # 00:00, 07:00, 14:00, 21:00 (three hours)
    period = period_containing(utc(2026, 12, 7, 15), seven, SHANGHAI)  # 23:00 local
    assert (period.start, period.end, period.label) == (utc(2026, 12, 7, 13), utc(2026, 12, 7, 16), "2026-12-07T2100")


def test_a_month_with_a_clock_change_is_a_calendar_month_of_local_time() -> None:
    # Berlin moves from UTC+1 to UTC+2 on 29 March 2026.
    period = period_containing(utc(2026, 3, 15), MONTHLY, BERLIN)
    assert (period.start, period.end) == (utc(2026, 2, 28, 23), utc(2026, 3, 31, 22))


def test_the_previous_period_is_the_one_just_before() -> None:
    december = period_containing(utc(2026, 12, 7), MONTHLY, SHANGHAI)
    assert previous_period(december, MONTHLY, SHANGHAI).label == "2026-11"
    january = period_containing(utc(2026, 1, 10), MONTHLY, SHANGHAI)
    assert previous_period(january, MONTHLY, SHANGHAI).label == "2025-12"
    quarter = period_containing(utc(2026, 12, 6, 16, 5), QUARTER_HOURS, SHANGHAI)  # 00:05 local
    assert previous_period(quarter, QUARTER_HOURS, SHANGHAI).label == "2026-12-06T2345"


@pytest.mark.parametrize(
    ("cadence", "instant"),
    [(MONTHLY, utc(2026, 12, 7)), (WEEKLY, utc(2026, 12, 7)), (QUARTER_HOURS, utc(2026, 12, 7, 6, 31))],
)
def test_a_label_reads_back_as_its_period(cadence: Cadence, instant: datetime) -> None:
    period = period_containing(instant, cadence, SHANGHAI)
    assert period_of_label(period.label, cadence, SHANGHAI) == period


@pytest.mark.parametrize(
    ("label", "cadence"),
    [
        ("2026-13", MONTHLY),
        ("2026-W49", MONTHLY),
        ("2026-12", WEEKLY),
        ("2026-W54", WEEKLY),
        ("2026-12-07T1437", QUARTER_HOURS),  # not on a quarter hour
        ("2026-12-07T14:30", QUARTER_HOURS),
        ("2026/12", MONTHLY),
    ],
)
def test_a_label_that_names_no_period_of_the_cadence_is_refused(label: str, cadence: Cadence) -> None:
    with pytest.raises(ValueError):
        period_of_label(label, cadence, SHANGHAI)


def test_labels_hold_no_separator_of_ids_or_keys() -> None:
    for cadence in (MONTHLY, WEEKLY, QUARTER_HOURS):
        label = period_containing(utc(2026, 12, 7, 6, 31), cadence, SHANGHAI).label
        assert "/" not in label and ":" not in label


def test_a_cadence_in_minutes_says_how_many() -> None:
    with pytest.raises(ValueError):
        Cadence(kind=CadenceKind.MINUTES)
    with pytest.raises(ValueError):
        Cadence(kind=CadenceKind.WEEKLY, minutes=15)
    assert QUARTER_HOURS.name == "minutes-15" and MONTHLY.name == "monthly"


def test_a_settlement_period_is_the_period_a_statement_takes() -> None:
    period = period_containing(utc(2026, 12, 7), MONTHLY, SHANGHAI)
    assert isinstance(period, Period) and utc(2026, 12, 7) in period
