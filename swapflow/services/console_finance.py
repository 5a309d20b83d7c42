"""What the console's finance pages read besides settlement runs (`services/settlement_statements.py`):
the refunds that need finance, of riders of the caller's cities; reconciliation differences a page at a
time; and revenue and refunds per day from the ledger, for the chart. Days are UTC days."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.money import LedgerPosting, LedgerTransaction, ReconciliationException, ReconciliationRun, Refund
from swapflow.db.network import Cabinet, Rider, Station
from swapflow.db.swaps import SwapOrder
from swapflow.payments.ledger import REFUNDS_PAYABLE, SWAP_REVENUE
from swapflow.payments.refunds import RefundState
from swapflow.services.refunds import stuck_refunds

# ---------------------------------------------------------------------------------- refunds


@dataclass(frozen=True)
class FinanceRefund:
    """A refund that needs finance, and why: `escalated` (its provider gave up; finance resolves it) or
    `stuck` (past its expected arrival, or never accepted by its provider: its workflow still follows it)."""

    refund: Refund
    city_code: str | None
    need: str

    @property
    def escalated(self) -> bool:
        return self.need == "escalated"


async def refunds_needing_finance(session: AsyncSession, cities: Sequence[str] | None) -> list[FinanceRefund]:
    """The refunds stuck or escalated (`services.refunds.stuck_refunds`) of riders of `cities` (None:
    all), escalated ones first, then oldest first."""
    found = await stuck_refunds(session)
    city_of = dict(
        (
            await session.execute(
                select(Rider.id, Rider.city_code).where(Rider.id.in_({refund.rider_id for refund in found}))
            )
        )
        .tuples()
        .all()
    )
    rows = [
        FinanceRefund(
            refund,
            city_of.get(refund.rider_id),
            "escalated" if refund.status == RefundState.ESCALATED else "stuck",
        )
        for refund in found
        if cities is None or city_of.get(refund.rider_id) in cities
    ]
    return sorted(rows, key=lambda row: not row.escalated)  # stable: oldest first within each


# ---------------------------------------------------------------------------------- reconciliation


@dataclass(frozen=True)
class DifferencePage:
    differences: list[ReconciliationException]
    next_cursor: int | None
    """The last difference shown when there are more; None: this was the last."""


async def difference_page(
    session: AsyncSession,
    *,
    status: str | None = "open",
    provider: str | None = None,
    day: date | None = None,
    cursor: int | None = None,
    limit: int = 50,
) -> DifferencePage:
    """Reconciliation differences, latest first, `open` or `resolved` (None: both), of one provider and
    day if named, at most `limit`, after the difference `cursor` of the previous page."""
    query = select(ReconciliationException).order_by(ReconciliationException.id.desc()).limit(limit + 1)
    if status is not None:
        query = query.where(ReconciliationException.status == status)
    if provider:
        query = query.where(ReconciliationException.provider == provider)
    if day is not None:
        query = query.where(ReconciliationException.day == day.isoformat())
    if cursor is not None:
        query = query.where(ReconciliationException.id < cursor)
    found = list(await session.scalars(query))
    more = len(found) > limit
    return DifferencePage(found[:limit], found[limit - 1].id if more else None)


async def latest_reconciliations(session: AsyncSession, limit: int = 14) -> list[ReconciliationRun]:
    """The latest reconciliation runs (a day and a provider each), latest day first."""
    return list(
        await session.scalars(
            select(ReconciliationRun).order_by(ReconciliationRun.day.desc(), ReconciliationRun.provider).limit(limit)
        )
    )


# ---------------------------------------------------------------------------------- revenue


@dataclass(frozen=True)
class MoneyPerDay:
    """Revenue recognised from completed swaps and refunds owed to riders, per day, in one currency
    (minor units; a day with nothing is 0)."""

    currency: str
    days: list[date]
    revenue_minor: list[int]
    refunds_minor: list[int]


REFUND_KINDS = ("refund", "swap_refund")
"""The ledger transactions that make a refund owed to its rider (`payments.refunds.book_refund_owed`)."""


async def revenue_and_refunds(
    session: AsyncSession, *, start: date, end: date, cities: Sequence[str] | None
) -> list[MoneyPerDay]:
    """Each day's revenue (credits to `revenue:swaps`) and refunds (what refunds made owed: credits to
    `refunds_payable` by a refund's transaction) from `start` to `end` inclusive, per currency, of the
    swaps of cabinets in `cities` (None: all)."""
    at: Any = LedgerTransaction.created_at
    if session.get_bind().dialect.name == "postgresql":  # its date() is in the session's zone
        at = func.timezone("UTC", at)
    day = func.date(at)
    query = (
        select(LedgerPosting.account, LedgerPosting.currency, day, func.sum(LedgerPosting.amount_minor))
        .join(LedgerTransaction, LedgerTransaction.id == LedgerPosting.transaction_id)
        .where(
            LedgerTransaction.created_at >= datetime.combine(start, time.min, UTC),
            LedgerTransaction.created_at < datetime.combine(end + timedelta(days=1), time.min, UTC),
            (LedgerPosting.account == SWAP_REVENUE)
            | ((LedgerPosting.account == REFUNDS_PAYABLE) & LedgerTransaction.kind.in_(REFUND_KINDS)),
        )
        .group_by(LedgerPosting.account, LedgerPosting.currency, day)
    )
    if cities is not None:
        query = (
            query.join(SwapOrder, SwapOrder.id == LedgerTransaction.order_id)
            .join(Cabinet, Cabinet.id == SwapOrder.cabinet_id)
            .join(Station, Station.id == Cabinet.station_id)
            .where(Station.city_code.in_(list(cities)))
        )
    days = [start + timedelta(days=n) for n in range((end - start).days + 1)]
    index = {d.isoformat(): n for n, d in enumerate(days)}
    figures: dict[str, dict[str, list[int]]] = defaultdict(
        lambda: {SWAP_REVENUE: [0] * len(days), REFUNDS_PAYABLE: [0] * len(days)}
    )
    for account, currency, on, total in (await session.execute(query)).tuples():
        position = index.get(str(on)[:10])  # SQLite answers a string, PostgreSQL a date
        if position is not None:
            figures[currency][account][position] -= int(total or 0)  # both are credits
    return [
        MoneyPerDay(currency, days, series[SWAP_REVENUE], series[REFUNDS_PAYABLE])
        for currency, series in sorted(figures.items())
    ]
