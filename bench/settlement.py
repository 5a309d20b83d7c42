"""Settlement benchmark: one partner's period of 100,000 accruals settles (frozen into its run, the
statement computed, its lines, totals and ledger adjustments recorded), as the settlement workflow's
`freeze_settlement` activity does it, in one transaction.

A partner on a tiered plan (5 % up to 1,000 swaps, 7 % above) has N accruals in last month (Shanghai
time), inserted beforehand as completed swaps book them (not timed); then the activity runs once.
Prints its wall and CPU seconds (this process: the activity and the SQLite driver's thread; not a
PostgreSQL server's) against the target.

    .venv/bin/python bench/settlement.py                        # 100,000 accruals, temporary SQLite
    .venv/bin/python bench/settlement.py --accruals 20000 --database-url postgresql://…/bench

Without --database-url the database is a temporary SQLite file; with one, it must be empty (migrated here).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import func, insert, select  # noqa: E402

from swapflow.activities.settlement import SettlementActivities  # noqa: E402
from swapflow.db.commissions import (  # noqa: E402
    CommissionAccrual,
    CommissionPlan,
    CommissionPlanVersion,
    Partner,
    PlanAssignment,
    SettlementLine,
)
from swapflow.db.engine import Database  # noqa: E402
from swapflow.db.migrate import upgrade  # noqa: E402
from swapflow.domain.clock import utcnow  # noqa: E402
from swapflow.domain.commissions import Cadence, CadenceKind, period_containing, previous_period  # noqa: E402
from swapflow.domain.pricing import percent_of  # noqa: E402
from swapflow.settings import Settings  # noqa: E402
from swapflow.workflows.settlement_contract import FreezeRequest, SettlementStart, settlement_run_id  # noqa: E402

TARGET_S = 30.0
PARTNER = "bench-host"
PLAN = "bench-plan"
NET = 600
BATCH = 10_000


async def prepare(db: Database, accruals: int) -> SettlementStart:
    """The partner, its plan and its accruals of last month; the run's input."""
    zone = ZoneInfo("Asia/Shanghai")
    monthly = Cadence(kind=CadenceKind.MONTHLY)
    period = previous_period(period_containing(utcnow(), monthly, zone), monthly, zone)
    since = datetime(2020, 1, 1, tzinfo=UTC)
    async with db.transaction() as session:
        session.add(
            Partner(
                id=PARTNER,
                kind="station_host",
                name=PARTNER,
                cities=["SH"],
                time_zone="Asia/Shanghai",
                currency="CNY",
                payout_method="sandbox",
            )
        )
        session.add(CommissionPlan(id=PLAN, name=PLAN, cadence="monthly", created_by="planner"))
        await session.flush()
        session.add(
            CommissionPlanVersion(
                plan_id=PLAN,
                version=1,
                effective_from=since,
                currency="CNY",
                percent_bp=500,
                tiers=[{"above_swaps": 1000, "percent_bp": 700}],
                created_by="planner",
            )
        )
        session.add(PlanAssignment(partner_id=PARTNER, plan_id=PLAN, effective_from=since, assigned_by="admin"))
    step = (period.end - period.start) / (accruals + 1)
    for first in range(0, accruals, BATCH):
        rows = [
            {
                "key": f"swap:bench-{n}:{PARTNER}:percentage",
                "order_id": f"bench-{n}",
                "partner_id": PARTNER,
                "role": "station_host",
                "kind": "percentage",
                "amount_minor": percent_of(NET, 500),
                "currency": "CNY",
                "plan_id": PLAN,
                "plan_version": 1,
                "basis_minor": NET,
                "rate_bp": 500,
                "at": period.start + step * (n + 1),
            }
            for n in range(first, min(first + BATCH, accruals))
        ]
        async with db.transaction() as session:
            await session.execute(insert(CommissionAccrual), rows)
    return SettlementStart(
        run_id=settlement_run_id(PARTNER, period.label),
        partner_id=PARTNER,
        period_label=period.label,
        period_start=period.start,
        period_end=period.end,
        prepared_by="bench",
        remind_after_s=timedelta(days=1).total_seconds(),
    )


async def bench(args: argparse.Namespace) -> bool:
    with tempfile.TemporaryDirectory(prefix="swapflow-settlement-bench-") as folder:
        url = args.database_url or f"sqlite:///{Path(folder) / 'bench.db'}"
        upgrade(url)
        db = Database(url)
        try:
            began = time.monotonic()
            start = await prepare(db, args.accruals)
            print(f"{args.accruals:,} accruals of {start.period_label} inserted in {time.monotonic() - began:.1f} s")
            activities = SettlementActivities(db, Settings(), {})
            wall, cpu = time.perf_counter(), time.process_time()
            state = await activities.freeze(FreezeRequest(start=start, revision=1, by="bench"))
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            async with db.sessions() as session:
                frozen = await session.scalar(select(func.count()).where(CommissionAccrual.run_id == start.run_id))
                lines = await session.scalar(
                    select(func.sum(SettlementLine.amount_minor)).where(SettlementLine.run_id == start.run_id)
                )
        finally:
            await db.dispose()
    print(
        f"run {state.run_id}: {state.status.value}, {frozen:,} accruals frozen, total {state.total_minor:,} CNY minor"
    )
    print(f"lines add up to the total: {lines == state.total_minor}")
    ok = wall <= TARGET_S
    print(
        f"settled in {wall:.2f} s wall, {cpu:.2f} s CPU (target: ≤ {TARGET_S:.0f} s wall)  {'ok' if ok else 'MISSED'}"
    )
    return ok and frozen == args.accruals and lines == state.total_minor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accruals", type=int, default=100_000)
    parser.add_argument("--database-url", default=None, help="an empty database (default: temporary SQLite)")
    args = parser.parse_args()
    sys.exit(0 if asyncio.run(bench(args)) else 1)


if __name__ == "__main__":
    main()
