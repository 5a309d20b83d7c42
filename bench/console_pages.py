"""Console pages benchmark: server time of each console page, p50 and p95 over repeated requests, on the
demo network (32 cabinets) or on a grown one (`--cabinets 10000`: the demo's 4 cities, 4 cabinets a
station, 12 slots and 9 packs a cabinet; with `--swaps-per-cabinet`, past swaps too, and a share of
cabinets offline and alerting, so every state is drawn).

The app runs in this process (its lifespan, database pool and all) and each request is timed from
sending it to the last byte of the page, so the figure is the server's time plus an in-process call.
Beside it, the process's CPU per request (the server's work plus the test client's), which other load
on the machine does not inflate as it does wall time.

    .venv/bin/python bench/console_pages.py                      # demo network, temporary SQLite
    .venv/bin/python bench/console_pages.py --cabinets 10000     # 10,000 cabinets
    .venv/bin/python bench/console_pages.py --cabinets 10000 --database-url postgresql+psycopg://…/bench

With --database-url the database must be empty (it is migrated and seeded here).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import insert, select, update  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from swapflow.api.app import create_app  # noqa: E402
from swapflow.db.engine import create_sync_engine  # noqa: E402
from swapflow.db.migrate import upgrade  # noqa: E402
from swapflow.db.network import Cabinet, Rider, Station  # noqa: E402
from swapflow.db.ops import Alert  # noqa: E402
from swapflow.db.swaps import SwapOrder  # noqa: E402
from swapflow.demo.network import seed_demo_network  # noqa: E402
from swapflow.domain.clock import utcnow  # noqa: E402
from swapflow.domain.ops import OperatorRole  # noqa: E402
from swapflow.domain.swaps import SwapStage, SwapStatus  # noqa: E402
from swapflow.ops.accounts import create_operator  # noqa: E402
from swapflow.settings import Settings  # noqa: E402

TARGET_P95_MS = 200.0
CITIES = 4


def seed(url: str, cabinets: int, swaps_per_cabinet: int) -> None:
    """The demo network with `cabinets` cabinets, some offline and alerting, and past swaps."""
    upgrade(url)
    engine = create_sync_engine(url)
    per_station = 1 if cabinets <= 32 else 4
    stations = max(1, cabinets // (CITIES * per_station))
    started = time.perf_counter()
    seed_demo_network(engine, stations_per_city=stations, cabinets_per_station=per_station, demo_partners=False)
    rng = random.Random(7)
    with Session(engine) as session, session.begin():
        ids = list(session.scalars(select(Cabinet.id).order_by(Cabinet.id)))
        online = [i for i in ids if rng.random() < 0.9]
        session.execute(update(Cabinet).where(Cabinet.id.in_(online)).values(online=True, last_seen_at=utcnow()))
        alerting = [i for i in ids if rng.random() < 0.05]
        session.execute(
            insert(Alert),
            [
                {"kind": "bench", "severity": "warning", "dedupe_key": f"bench/{c}", "cabinet_id": c, "message": "-"}
                for c in alerting
            ],
        )
        riders = {
            city: list(session.scalars(select(Rider.id).where(Rider.city_code == city)))
            for city in session.scalars(select(Station.city_code).distinct())
        }
        city_of = {
            cabinet: city for cabinet, city in session.execute(select(Cabinet.id, Station.city_code).join(Station))
        }
        now = utcnow()
        rows = [
            {
                "id": f"bench-{cabinet}-{n}",
                "rider_id": rng.choice(riders[city_of[cabinet]]),
                "cabinet_id": cabinet,
                "idempotency_key": f"bench-{cabinet}-{n}",
                "status": SwapStatus.COMPLETED,
                "stage": SwapStage.COMPLETED,
                "steps": [],
                "created_at": now - timedelta(minutes=rng.randrange(60 * 24 * 30)),
            }
            for cabinet in ids
            for n in range(swaps_per_cabinet)
        ]
        for start in range(0, len(rows), 20_000):
            session.execute(insert(SwapOrder), rows[start : start + 20_000])
    engine.dispose()
    print(f"seeded {len(ids)} cabinets, {len(rows)} swaps in {time.perf_counter() - started:.1f} s", flush=True)


def token(url: str, account: str = "bench-ops", role: OperatorRole = OperatorRole.OPERATOR) -> str:
    engine = create_sync_engine(url)
    with Session(engine) as session, session.begin():
        value = create_operator(session, account, "Bench", role, ["SH"])
    engine.dispose()
    return value


def sign_in(client: TestClient, value: str) -> None:
    page = client.get("/console/sign-in").text
    csrf = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    answer = client.post("/console/sign-in", data={"token": value, "csrf_token": csrf})
    assert answer.status_code == 303, answer.text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cabinets", type=int, default=32)
    parser.add_argument("--swaps-per-cabinet", type=int, default=5)
    parser.add_argument("--requests", type=int, default=40, help="requests per page")
    parser.add_argument("--database-url")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        seed(url, args.cabinets, args.swaps_per_cabinet)
        accounts = {"ops": token(url), "finance": token(url, "bench-finance", OperatorRole.FINANCE)}
        settings = Settings().updated(data_dir=Path(tmp) / "data", database_url=url)
        # A swap's, a run's and a work order's pages also read their workflow's history from Temporal,
        # which this bench does not run: their database part is what the lists below time.
        pages = {
            "network map (SH)": ("ops", "/console/network?city=SH"),
            "cabinet table (SH, page 1)": ("ops", "/console/network/cabinets?city=SH"),
            "cabinet table (SH, offline)": ("ops", "/console/network/cabinets?city=SH&state=offline"),
            "cabinet table (SH, page 20)": ("ops", "/console/network/cabinets?city=SH&page=20"),
            "cabinet page": ("ops", "/console/cabinets/cab-sh-001-1"),
            "battery page": ("ops", "/console/batteries/BAT0000001"),
            "swap search (SH)": ("ops", "/console/swaps"),
            "swap search (a cabinet)": ("ops", "/console/swaps?cabinet_id=cab-sh-001-1"),
            "alerts (open)": ("ops", "/console/alerts"),
            "work orders": ("ops", "/console/work-orders"),
            "incident figures": ("ops", "/console/figures"),
            "finance overview": ("finance", "/console/finance"),
            "settlement runs": ("finance", "/console/finance/settlements"),
            "refunds needing finance": ("finance", "/console/finance/refunds"),
        }
        worst = 0.0
        print(f"{'page':32} {'p50 ms':>8} {'p95 ms':>8} {'cpu ms':>8} {'bytes':>9}")
        for account, value in accounts.items():
            with TestClient(create_app(settings), base_url="https://bench", follow_redirects=False) as client:
                sign_in(client, value)
                for name, (who, path) in pages.items():
                    if who != account:
                        continue
                    client.get(path)  # warm: templates compiled, connections open
                    times = []
                    cpu_started = time.process_time()
                    for _ in range(args.requests):
                        started = time.perf_counter()
                        answer = client.get(path)
                        times.append((time.perf_counter() - started) * 1000)
                        assert answer.status_code == 200, (path, answer.status_code)
                    cpu = (time.process_time() - cpu_started) * 1000 / args.requests
                    p95 = statistics.quantiles(times, n=20)[-1]
                    worst = max(worst, p95)
                    median = statistics.median(times)
                    print(f"{name:32} {median:8.1f} {p95:8.1f} {cpu:8.1f} {len(answer.content):9}", flush=True)
        verdict = "met" if worst < TARGET_P95_MS else "MISSED"
        print(f"worst p95 {worst:.1f} ms; target < {TARGET_P95_MS:.0f} ms: {verdict}")


if __name__ == "__main__":
    main()
