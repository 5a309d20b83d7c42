"""Settlement runs as finance and partners read them: a page of runs, one run's detail (its statement's
lines, the decisions finance took on it, its payouts), its statement as CSV, and the bank transfer file
of the caller's cities. What acts on a run is its workflow's (`services/settlements.py`).

The statement's CSV, one row per line in statement order, then a total row (`kind` total, `position`
empty, `amount_minor` the run's total, which its lines add up to). Its columns:

- run_id, partner_id, period: the run, its partner and its period label (the same on every row);
- position: the line's place in the statement, from 1;
- kind: accruals | tier_adjustment | cap | clawback | carried_in | carry_forward (or total);
- label: what the line is, in words;
- accrual_kind, plan_id, plan_version, rate_bp, swaps, basis_minor, swap_id, refund_id: the line's
  particulars where it has them (empty otherwise): the kind of accrual summed, the plan version it was
  earned under, its rate in basis points, how many swaps it covers and the net revenue its rate applies
  to, and for a clawback the swap and the refund that reversed it;
- amount_minor: the amount in minor units (an integer, negative for a deduction);
- amount: the same in major units with the currency's decimals (ISO 4217: 2 for CNY and EUR, 0 for JPY),
  a point as the separator and no grouping (`payments.bank_payouts.major_units`, as the bank file writes it);
- currency: the run's currency.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.commissions import Partner, PartnerPayout, SettlementDecision, SettlementLine, SettlementRun
from swapflow.domain.errors import NotFound
from swapflow.payments.bank_payouts import bank_transfer_file, major_units
from swapflow.payments.payouts import PayoutMethod, PayoutStatus
from swapflow.workflows.settlement_contract import RunStatus

PARTNER_VISIBLE = frozenset(
    {RunStatus.APPROVED, RunStatus.PAYING, RunStatus.PAID, RunStatus.PAYOUT_FAILED, RunStatus.NOTHING_DUE}
)
"""The runs a partner reads: statements finance has approved (or that had nothing to pay). A run still
being computed, awaiting approval or rejected may yet change."""

STATEMENT_COLUMNS = (
    "run_id",
    "partner_id",
    "period",
    "position",
    "kind",
    "label",
    "accrual_kind",
    "plan_id",
    "plan_version",
    "rate_bp",
    "swaps",
    "basis_minor",
    "swap_id",
    "refund_id",
    "amount_minor",
    "amount",
    "currency",
)
"""The statement CSV's header (the module's docstring says what each column holds)."""

_LINE_PARTICULARS = STATEMENT_COLUMNS[6:14]
"""The columns read from a line's `detail`."""


@dataclass(frozen=True)
class RunPage:
    """A page of runs, and the cursor of the next page (None: this was the last)."""

    runs: list[SettlementRun]
    next_cursor: str | None


@dataclass(frozen=True)
class RunDetail:
    """A run with its partner, its statement's lines in order, finance's decisions and its payouts (both
    oldest first)."""

    run: SettlementRun
    partner: Partner
    lines: list[SettlementLine]
    decisions: list[SettlementDecision]
    payouts: list[PartnerPayout]


async def list_runs(
    session: AsyncSession,
    *,
    cities: list[str] | None,
    statuses: Collection[str] | None = None,
    partner_id: str | None = None,
    period_label: str | None = None,
    cursor: str | None = None,
    limit: int,
) -> RunPage:
    """Runs of `cities` (None: all), latest period first (then by id), at most `limit`, filtered by
    status, partner and period label; `cursor` is the previous page's `next_cursor` (the last run it
    showed): NotFound unless it names a run of this listing."""
    where: list[Any] = []
    if cities is not None:
        where.append(SettlementRun.city_code.in_(cities))
    if statuses is not None:
        where.append(SettlementRun.status.in_(statuses))
    if partner_id is not None:
        where.append(SettlementRun.partner_id == partner_id)
    if period_label is not None:
        where.append(SettlementRun.period_label == period_label)
    query = select(SettlementRun).where(*where)
    if cursor is not None:
        last = await session.scalar(select(SettlementRun).where(SettlementRun.id == cursor, *where))
        if last is None:
            raise NotFound("settlement run", cursor, detail=f"cursor {cursor!r} names no run of this listing")
        query = query.where(
            or_(
                SettlementRun.period_start < last.period_start,
                and_(SettlementRun.period_start == last.period_start, SettlementRun.id > last.id),
            )
        )
    found = list(
        await session.scalars(query.order_by(SettlementRun.period_start.desc(), SettlementRun.id).limit(limit + 1))
    )
    more = len(found) > limit
    runs = found[:limit]
    return RunPage(runs=runs, next_cursor=runs[-1].id if more else None)


async def find_run(session: AsyncSession, run_id: str) -> SettlementRun:
    """The run, or NotFound."""
    run = await session.get(SettlementRun, run_id)
    if run is None:
        raise NotFound("settlement run", run_id)
    return run


async def run_detail(session: AsyncSession, run: SettlementRun) -> RunDetail:
    """Everything a run's page shows."""
    partner = await session.get(Partner, run.partner_id)
    if partner is None:  # the foreign key keeps it; a run is never shown without its partner
        raise NotFound("partner", run.partner_id)
    lines = await session.scalars(
        select(SettlementLine).where(SettlementLine.run_id == run.id).order_by(SettlementLine.position)
    )
    decisions = await session.scalars(
        select(SettlementDecision)
        .where(SettlementDecision.run_id == run.id)
        .order_by(SettlementDecision.at, SettlementDecision.id)
    )
    payouts = await session.scalars(
        select(PartnerPayout).where(PartnerPayout.run_id == run.id).order_by(PartnerPayout.attempt)
    )
    return RunDetail(run=run, partner=partner, lines=list(lines), decisions=list(decisions), payouts=list(payouts))


async def bank_file(session: AsyncSession, *, cities: list[str] | None) -> str:
    """The bank transfer file (`payments.bank_payouts`) of the bank payouts waiting for the bank, of the
    runs of `cities` (None: all)."""
    if cities is None:
        return await bank_transfer_file(session)
    waiting = await session.scalars(
        select(PartnerPayout.run_id)
        .join(SettlementRun, SettlementRun.id == PartnerPayout.run_id)
        .where(
            PartnerPayout.method == PayoutMethod.BANK,
            PartnerPayout.status == PayoutStatus.AWAITING_BANK,
            SettlementRun.city_code.in_(cities),
        )
    )
    return await bank_transfer_file(session, run_ids=list(waiting))


def statement_csv(detail: RunDetail) -> str:
    """The run's statement as CSV: STATEMENT_COLUMNS, a row per line, then the total row."""
    run = detail.run
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(STATEMENT_COLUMNS)

    def row(position: object, kind: str, label: str, particulars: dict[str, Any], amount_minor: int) -> None:
        writer.writerow(
            [
                run.id,
                run.partner_id,
                run.period_label,
                position,
                kind,
                label,
                *("" if particulars.get(name) is None else particulars[name] for name in _LINE_PARTICULARS),
                amount_minor,
                major_units(amount_minor, run.currency),
                run.currency,
            ]
        )

    for line in detail.lines:
        row(line.position, line.kind, line.label, line.detail or {}, line.amount_minor)
    row("", "total", "total", {}, run.total_minor)
    return out.getvalue()
