"""Swap throughput benchmark on the embedded stack.

Starts the whole stack (as `swapflow up` does) in a temporary data folder on free ports, runs the
demo network's cabinets as simulated MQTT cabinets, and drives swaps through the HTTP API at a rising
rate for a bounded time. Prints, per rate step: completed swaps per second, and p50/p95/p99 from the
API call to the return door's open acknowledgement (the POST returns exactly then); then the p99
command round trip (publish → ack), the workflow history events per swap, and the rate of an empty
workflow on the same Temporal server, so the ratio holds on a noisy machine.

    ./dev bench                       # steps 2,5,10,15 swaps/s, 20 s each
    ./dev bench --rates 5,10 --step-seconds 30

Honours SWAPFLOW_DATABASE_URL / SWAPFLOW_MQTT_URL to measure other back ends. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import func, select
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Worker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from empty_workflow import EmptyWorkflow  # noqa: E402

from swapflow.db.devices import DeviceCommand
from swapflow.db.engine import Database, create_sync_engine  # noqa: E402
from swapflow.db.migrate import upgrade  # noqa: E402
from swapflow.db.network import Battery, Cabinet, Rider, Station
from swapflow.db.swaps import SwapOrder
from swapflow.demo.accounts import load_demo_tokens, seed_demo_accounts
from swapflow.demo.network import seed_demo_network
from swapflow.domain.network import CustodianKind
from swapflow.domain.swaps import SwapStatus
from swapflow.infra.temporal import connect_temporal
from swapflow.settings import Settings  # noqa: E402
from swapflow.simulator.battery import SimBattery  # noqa: E402
from swapflow.simulator.cabinet import SimulatedCabinet  # noqa: E402
from swapflow.simulator.fleet import build_cabinets, sim_battery  # noqa: E402
from swapflow.stack.supervisor import Stack, UpOptions  # noqa: E402
from swapflow.workflows.swap_contract import swap_workflow_id


@dataclass
class StepResult:
    rate: float
    seconds: float
    started: int = 0
    completed: int = 0
    failed: int = 0
    skipped: int = 0  # no idle rider at an arrival: the driver, not the platform, was the limit
    door_open_s: list[float] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far; 0 where /proc is not there."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stack_cpu(stack: Stack) -> dict[str, float]:
    """CPU seconds per process of the stack, and of this benchmark process (cabinets and riders)."""
    used = {p.name: cpu_seconds(p.process.pid) for p in stack.processes if p.process is not None}
    used["bench (cabinets, riders)"] = cpu_seconds(os.getpid())
    return used


def pct(values: list[float], q: float) -> float:
    """q-quantile in milliseconds (nearest rank)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BenchRider:
    def __init__(self, rider_id: str, city: str, battery: SimBattery) -> None:
        self.rider_id, self.city, self.battery = rider_id, city, battery


async def one_swap(
    http: httpx.AsyncClient,
    rider: BenchRider,
    cabinets: dict[str, SimulatedCabinet],
    city_cabinets: list[str],
    step: StepResult,
    rng: random.Random,
) -> None:
    """One rider's swap through the API and at the doors."""
    cabinet_id = rng.choice(city_cabinets)
    cabinet = cabinets[cabinet_id]
    began = time.perf_counter()
    response = await http.post(
        "/v1/swaps",
        json={"rider_id": rider.rider_id, "cabinet_id": cabinet_id},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    door_open_s = time.perf_counter() - began
    swap = response.json()
    if response.status_code >= 400 or swap["stage"] != "return_door_open":
        reason = swap.get("failure_reason") or swap.get("title") or str(response.status_code)
        step.failed += 1
        step.failures[reason] = step.failures.get(reason, 0) + 1
        return
    step.door_open_s.append(door_open_s)
    await cabinet.insert_battery(swap["return_slot_no"], rider.battery)
    while True:
        swap = (await http.get(f"/v1/swaps/{swap['id']}")).json()
        if swap["stage"] == "charged_door_open" and cabinet.door_open(swap["charged_slot_no"]):
            rider.battery = await cabinet.take_battery(swap["charged_slot_no"])
        if swap["status"] != "in_progress":
            break
        await asyncio.sleep(0.5)  # as often as a rider's app would look
    if swap["status"] == "completed":
        step.completed += 1
    else:
        step.failed += 1
        step.failures[swap["failure_reason"]] = step.failures.get(swap["failure_reason"], 0) + 1


async def drive(
    http: httpx.AsyncClient,
    riders: list[BenchRider],
    cabinets: dict[str, SimulatedCabinet],
    by_city: dict[str, list[str]],
    rate: float,
    seconds: float,
) -> StepResult:
    """Open-loop arrivals at `rate` per second for `seconds`; each arrival takes an idle rider."""
    step = StepResult(rate=rate, seconds=seconds)
    idle = list(riders)
    rng = random.Random(int(rate * 1000))
    tasks: set[asyncio.Task[None]] = set()

    async def run(rider: BenchRider) -> None:
        try:
            await one_swap(http, rider, cabinets, by_city[rider.city], step, rng)
        except Exception as exc:  # a benchmark records failures, it does not stop on them
            step.failed += 1
            step.failures[type(exc).__name__] = step.failures.get(type(exc).__name__, 0) + 1
        finally:
            idle.append(rider)

    start = time.perf_counter()
    n = 0
    while time.perf_counter() - start < seconds:
        due = start + n / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        n += 1
        if not idle:
            step.skipped += 1
            continue
        rider = idle.pop(rng.randrange(len(idle)))
        step.started += 1
        task = asyncio.create_task(run(rider))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=120)
    step.seconds = time.perf_counter() - start
    return step


async def empty_workflow_rate(client: Client, count: int, concurrency: int) -> float:
    """Empty workflows per second, started and awaited `concurrency` at a time."""
    queue = f"bench-empty-{uuid.uuid4().hex[:8]}"
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            await client.execute_workflow(
                EmptyWorkflow.run,
                id=f"bench-empty-{queue}-{i}",
                task_queue=queue,
                execution_timeout=timedelta(minutes=1),
            )

    async with Worker(client, task_queue=queue, workflows=[EmptyWorkflow]):
        began = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(count)))
        return count / (time.perf_counter() - began)


IDLE_SECONDS = 10.0

# The steps between the API call and the return door's open ack, as a swap's history shows them.
DOOR_PATH = (
    "start → first workflow task starts",
    "first workflow task (admit)",
    "charge: scheduled → started",
    "charge: started → completed",
    "charge done → next workflow task starts",
    "that workflow task (door command + ack)",
)


def door_path(history: WorkflowHistory) -> list[float] | None:
    """Seconds spent in each DOOR_PATH step of one swap (None if its history does not show them all)."""
    marks: list[datetime] = [history.events[0].event_time.ToDatetime()]
    wanted = iter(
        [
            EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED,
            EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
            EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED,
            EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED,
            EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED,
            EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED,
            EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
        ]
    )
    looking_for = next(wanted)
    for event in history.events:
        if event.event_type != looking_for:
            continue
        marks.append(event.event_time.ToDatetime())
        looking_for = next(wanted, None)
        if looking_for is None:
            break
    else:
        return None
    # Scheduling the charge ends the first task: those two marks are one moment, not a step.
    del marks[3]
    return [(b - a).total_seconds() for a, b in zip(marks, marks[1:], strict=False)]


async def histories(client: Client, order_ids: list[str]) -> list[WorkflowHistory]:
    return [await client.get_workflow_handle(swap_workflow_id(order_id)).fetch_history() for order_id in order_ids]


def bench_network(prefix: str, stations_per_city: int, riders_per_city: int) -> tuple[Settings, Path, str]:
    """Settings for an embedded stack in a new temporary folder on free ports (the configured database if
    any), that database migrated and seeded with the demo network; with the folder and an admin's token
    (an admin starts swaps on any rider's behalf)."""
    data_dir = Path(tempfile.mkdtemp(prefix=prefix))
    base = Settings()
    settings = base.updated(
        data_dir=data_dir,
        log_level="WARNING",
        api={"port": free_port()},
        temporal={"dev_port": free_port(), "ui_port": free_port()},
        embedded_broker={"port": free_port()},
    )
    if base.database_url is None:
        settings = settings.updated(database_url=f"sqlite:///{data_dir / 'swapflow.db'}")
    url = settings.effective_database_url
    upgrade(url)
    engine = create_sync_engine(url)
    seed_demo_network(engine, stations_per_city=stations_per_city, riders_per_city=riders_per_city)
    seed_demo_accounts(engine, data_dir)
    engine.dispose()
    return settings, data_dir, load_demo_tokens(data_dir).operators["admin"]


async def main(args: argparse.Namespace) -> None:
    settings, data_dir, admin = bench_network("swapflow-bench-", args.stations_per_city, args.riders_per_city)

    stack = Stack(settings, UpOptions(simulate=False, seed=False))
    print(f"starting the embedded stack in {data_dir} …", flush=True)
    await stack.start()
    db = Database(settings.effective_database_url)
    cabinet_tasks: list[asyncio.Task[None]] = []
    try:
        cabinets = await build_cabinets(settings, db, charge_speedup=600.0, telemetry_interval_s=10.0)
        cabinet_tasks = [asyncio.create_task(c.run()) for c in cabinets.values()]
        await asyncio.wait_for(asyncio.gather(*(c.ready.wait() for c in cabinets.values())), 30)
        async with db.sessions() as session:
            rows = (
                await session.execute(
                    select(Rider, Battery).join(
                        Battery, (Battery.custodian_kind == CustodianKind.RIDER) & (Battery.custodian_ref == Rider.id)
                    )
                )
            ).all()
            city_of = dict(
                (
                    await session.execute(
                        select(Cabinet.id, Station.city_code).join(Station, Station.id == Cabinet.station_id)
                    )
                ).all()
            )
        riders = [BenchRider(r.id, r.city_code, sim_battery(b)) for r, b in rows]
        by_city: dict[str, list[str]] = {}
        for cabinet_id in cabinets:
            by_city.setdefault(city_of[cabinet_id], []).append(cabinet_id)
        riders = [r for r in riders if r.city in by_city]
        await asyncio.sleep(2)  # the adapter takes the births in
        print(
            f"{len(cabinets)} simulated cabinets, {len(riders)} riders; "
            f"rates {args.rates} swaps/s, {args.step_seconds:.0f} s each\n",
            flush=True,
        )
        print(
            f"{'offered/s':>9} {'done/s':>7} {'done':>5} {'failed':>6} {'skipped':>7} "
            f"{'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}   (API call → return door open ack)"
        )
        steps = []
        # What the stack burns with no swaps (telemetry, loops, the simulated world), to tell it from a swap's cost.
        idle_before = stack_cpu(stack)
        await asyncio.sleep(IDLE_SECONDS)
        cpu_before = stack_cpu(stack)
        idle = {name: (cpu_before[name] - idle_before.get(name, 0)) / IDLE_SECONDS for name in cpu_before}
        driven_s = 0.0
        async with httpx.AsyncClient(
            base_url=settings.api.effective_url,
            timeout=60,
            headers={"Authorization": f"Bearer {admin}"},
            limits=httpx.Limits(max_connections=200),
        ) as http:
            for rate in args.rates:
                step = await drive(http, riders, cabinets, by_city, rate, args.step_seconds)
                steps.append(step)
                driven_s += step.seconds
                print(
                    f"{rate:>9.1f} {step.completed / step.seconds:>7.2f} {step.completed:>5} {step.failed:>6} "
                    f"{step.skipped:>7} {pct(step.door_open_s, 0.5):>7.0f} {pct(step.door_open_s, 0.95):>7.0f} "
                    f"{pct(step.door_open_s, 0.99):>7.0f}" + (f"   failures: {step.failures}" if step.failures else ""),
                    flush=True,
                )
        cpu_after = stack_cpu(stack)
        cores = os.cpu_count() or 1
        print(
            f"\nCPU used while driving swaps ({cores} cores = {100 * cores}%): "
            + ", ".join(
                f"{name} {100 * (cpu_after[name] - cpu_before.get(name, 0)) / driven_s:.0f}%" for name in cpu_after
            )
        )
        completed = sum(step.completed for step in steps)
        if completed:
            per_swap = {
                name: max(0.0, cpu_after[name] - cpu_before.get(name, 0) - idle.get(name, 0) * driven_s) / completed
                for name in cpu_after
            }
            spare = cores - sum(idle.values())
            print(
                "CPU per completed swap, beyond the idle stack's: "
                + ", ".join(f"{name} {1000 * cost:.0f} ms" for name, cost in per_swap.items() if cost >= 0.0005)
                + f"; total {1000 * sum(per_swap.values()):.0f} ms, so these {cores} cores (less "
                f"{100 * sum(idle.values()):.0f}% idle load) top out near {spare / sum(per_swap.values()):.1f} swaps/s"
            )
        async with db.sessions() as session:
            round_trips = [
                (c.acked_at - c.sent_at).total_seconds()
                for c in (await session.scalars(select(DeviceCommand).where(DeviceCommand.acked_at.is_not(None)))).all()
            ]
            # The last ones: they ran at the highest rate.
            done_ids = (
                await session.scalars(
                    select(SwapOrder.id)
                    .where(SwapOrder.status == SwapStatus.COMPLETED)
                    .order_by(SwapOrder.created_at.desc())
                    .limit(40)
                )
            ).all()
            total = await session.scalar(select(func.count()).select_from(SwapOrder))
        client = await connect_temporal(settings)
        done = await histories(client, list(done_ids))
        events = [len(history.events) for history in done]
        paths = [path for path in map(door_path, done) if path is not None]
        empty_rate = await empty_workflow_rate(client, args.empty_workflows, concurrency=50)
        best = max(steps, key=lambda s: s.completed / s.seconds)
        print()
        print(
            f"command round trip (publish → ack), {len(round_trips)} commands: "
            f"p50 {pct(round_trips, 0.5):.0f} ms, p99 {pct(round_trips, 0.99):.0f} ms"
        )
        if events:
            print(
                f"history events per completed swap: median {statistics.median(events):.0f} "
                f"(min {min(events)}, max {max(events)})"
            )
        if paths:
            print(f"where the time to the open door goes, last {len(paths)} completed swaps (p50 / p90 ms):")
            for i, name in enumerate(DOOR_PATH):
                print(f"  {name:<42} {pct([p[i] for p in paths], 0.5):>6.0f} / {pct([p[i] for p in paths], 0.9):>6.0f}")
        print(
            f"empty workflow rate on the same server: {empty_rate:.1f}/s "
            f"(best swap rate {best.completed / best.seconds:.2f}/s = "
            f"{100 * best.completed / best.seconds / empty_rate:.1f}% of it)"
        )
        print(f"swap orders in the database: {total}")
    finally:
        for task in cabinet_tasks:
            task.cancel()
        await asyncio.gather(*cabinet_tasks, return_exceptions=True)
        await db.dispose()
        await stack.stop()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",")], default=[2.0, 5.0, 10.0, 15.0])
    parser.add_argument("--step-seconds", type=float, default=20.0)
    parser.add_argument("--stations-per-city", type=int, default=16)
    parser.add_argument("--riders-per-city", type=int, default=40)
    parser.add_argument("--empty-workflows", type=int, default=500)
    return parser.parse_args()


async def run_until_signal(args: argparse.Namespace) -> None:
    """Ctrl-C or SIGTERM stop the benchmark through its clean-up, which stops the stack."""
    import signal

    task = asyncio.ensure_future(main(args))
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        print("\nbenchmark interrupted", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(run_until_signal(parse_args()))
