"""What accruing a swap's commissions costs: CPU per swap, against its target of 5 ms.

Seeds the demo network with its partners (a host per station, a franchisee and a two-level agent tree
per city, half the riders attributed) in a temporary SQLite database, or in the empty database
SWAPFLOW_DATABASE_URL names. Then completes swaps as `finish_swap` books them, each in its own
transaction, alternating two kinds: the revenue alone, and the revenue with its commissions
(`swapflow.payments.commissions.accrue_swap`, as the swap activity calls it). Prints the CPU of the
accrual call per swap (p50, p99, mean, with the partners' book loads it made), and the extra CPU a whole
transaction takes with the accrual (its commit included): the difference of the two kinds' means, also
as a multiple of the revenue alone, which holds better than milliseconds on a busy machine. Against
PostgreSQL the CPU is this process's only (the server's is not counted).

    .venv/bin/python bench/commission_accrual.py                # 1,000 swaps of each kind
    .venv/bin/python bench/commission_accrual.py --swaps 5000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import func, insert, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from swapflow.db.commissions import CommissionAccrual  # noqa: E402
from swapflow.db.engine import Database, create_sync_engine  # noqa: E402
from swapflow.db.migrate import upgrade  # noqa: E402
from swapflow.db.network import Cabinet, City, Rider, Station  # noqa: E402
from swapflow.db.swaps import SwapOrder  # noqa: E402
from swapflow.demo.network import seed_demo_network  # noqa: E402
from swapflow.domain.clock import utcnow  # noqa: E402
from swapflow.domain.swaps import SwapStage, SwapStatus  # noqa: E402
from swapflow.payments.commissions import accrue_swap  # noqa: E402
from swapflow.payments.ledger import DEFERRED_REVENUE, SWAP_REVENUE, Posting, post_transaction  # noqa: E402

TARGET_MS = 5.0


async def orders(db: Database, n: int, rng: random.Random) -> list[str]:
    """`n` swaps of demo riders at cabinets of their city, finished but not yet booked."""
    async with db.sessions() as session:
        riders = (await session.execute(select(Rider.id, Rider.city_code))).all()
        cabinets = (await session.execute(select(Cabinet.id, Station.city_code).join(Station))).all()
        prices = {
            code: (currency, price)
            for code, currency, price in await session.execute(select(City.code, City.currency, City.swap_price_minor))
        }
    by_city: dict[str, list[str]] = {}
    for cabinet_id, city in cabinets:
        by_city.setdefault(city, []).append(cabinet_id)
    rows = []
    for _ in range(n):
        rider_id, city = rng.choice(riders)
        currency, price = prices[city]
        rows.append(
            {
                "id": uuid.uuid4().hex,
                "rider_id": rider_id,
                "cabinet_id": rng.choice(by_city[city]),
                "idempotency_key": uuid.uuid4().hex,
                "status": SwapStatus.IN_PROGRESS,
                "stage": SwapStage.CHARGED_TAKEN,
                "price_minor": price,
                "currency": currency,
                "steps": [],
            }
        )
    async with db.transaction() as session:
        await session.execute(insert(SwapOrder), rows)
    return [row["id"] for row in rows]


async def finish(db: Database, order_id: str, *, accrue: bool) -> tuple[float, float]:
    """Book one swap's completion; returns the CPU seconds of the transaction and of its accrual call."""
    began = time.process_time()
    accrual = 0.0
    async with db.transaction() as session:
        order = await session.get(SwapOrder, order_id)
        assert order is not None and order.price_minor is not None and order.currency is not None
        completed_at = utcnow()
        await post_transaction(
            session,
            key=f"swap:{order.id}:revenue",
            kind="swap_revenue",
            currency=order.currency,
            order_id=order.id,
            memo="swap completed: revenue recognised",
            postings=[Posting(DEFERRED_REVENUE, order.price_minor), Posting(SWAP_REVENUE, -order.price_minor)],
        )
        if accrue:
            accruing = time.process_time()
            await accrue_swap(session, order, order.price_minor, completed_at)
            accrual = time.process_time() - accruing
        order.status, order.stage, order.finished_at = SwapStatus.COMPLETED, SwapStage.COMPLETED, completed_at
    return time.process_time() - began, accrual


async def bench(url: str, swaps: int) -> None:
    db = Database(url)
    try:
        ids = await orders(db, 2 * swaps, random.Random(7))
        plain: list[float] = []
        accrued: list[float] = []
        accruals: list[float] = []
        started = time.perf_counter()
        for plain_id, accrued_id in zip(ids[::2], ids[1::2], strict=True):  # alternated, so drift hits both
            plain.append((await finish(db, plain_id, accrue=False))[0])
            whole, call = await finish(db, accrued_id, accrue=True)
            accrued.append(whole)
            accruals.append(call)
        elapsed = time.perf_counter() - started
        async with db.sessions() as session:
            lines = await session.scalar(select(func.count()).select_from(CommissionAccrual))
    finally:
        await db.dispose()

    def ms(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    extra = 1000 * (statistics.fmean(accrued) - statistics.fmean(plain))
    mean = 1000 * statistics.fmean(accruals)
    print(
        f"{swaps} swaps with commissions ({lines} accrual lines, {lines / swaps:.1f} a swap) and {swaps} without, "
        f"in {elapsed:.1f} s"
    )
    print(
        f"accrue_swap CPU per swap: p50 {ms(accruals, 0.5):.2f} ms, p99 {ms(accruals, 0.99):.2f} ms, "
        f"mean {mean:.2f} ms (target < {TARGET_MS:.0f} ms: {'met' if mean < TARGET_MS else 'MISSED'})"
    )
    print(
        f"completion transaction CPU per swap: {1000 * statistics.fmean(plain):.2f} ms without, "
        f"{1000 * statistics.fmean(accrued):.2f} ms with commissions: {extra:+.2f} ms, "
        f"x{extra / (1000 * statistics.fmean(plain)):.2f} of the revenue alone "
        f"(target < {TARGET_MS:.0f} ms: {'met' if extra < TARGET_MS else 'MISSED'})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--swaps", type=int, default=1_000, help="swaps of each kind (default 1,000)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = os.environ.get("SWAPFLOW_DATABASE_URL") or f"sqlite:///{tmp}/bench.db"
        upgrade(url)
        engine = create_sync_engine(url)
        if not seed_demo_network(engine):
            raise SystemExit(f"{url} already holds a network: give an empty database")
        engine.dispose()
        asyncio.run(bench(url, args.swaps))


if __name__ == "__main__":
    main()
