"""Swaps at other cabinets while one cabinet floods the network with junk, on the embedded stack.

Starts the whole stack (as `swapflow up` does) in a temporary data folder on free ports, runs the demo
network's cabinets as simulated MQTT cabinets, and drives swaps through the HTTP API at a steady rate:
first for a while with no flood, then as long again while one cabinet (logged in with its own
credentials, its simulated self not running) publishes junk on all its topics at a steady rate
(invalid JSON, wrong types, acks for unknown commands, extreme timestamps, duplicates, ~1 MB payloads:
swapflow.simulator.flood). Prints the p95 of a whole swap (API call → completed) at the other cabinets
in both phases, and the target: flooded p95 ≤ 1.5 × unflooded.

    .venv/bin/python bench/device_flood.py                       # 2 swaps/s, 60 s per phase, 300 junk/s
    .venv/bin/python bench/device_flood.py --rate 2 --phase-seconds 90 --flood-rate 500

Honours SWAPFLOW_DATABASE_URL / SWAPFLOW_MQTT_URL to measure other back ends. Loopback only; the flood
is bounded in count (rate × phase) and time.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from swap_throughput import BenchRider, bench_network, pct, stack_cpu  # noqa: E402

from swapflow.db.devices import DeadLetter, DeviceMessage
from swapflow.db.engine import Database  # noqa: E402
from swapflow.db.network import Battery, Cabinet, Rider, Station
from swapflow.domain.clock import as_utc
from swapflow.domain.network import CustodianKind
from swapflow.identity.credentials import client_login  # noqa: E402
from swapflow.infra.mqtt import mqtt_client
from swapflow.simulator.cabinet import SimulatedCabinet  # noqa: E402
from swapflow.simulator.fleet import build_cabinets, sim_battery  # noqa: E402
from swapflow.simulator.flood import flood, junk  # noqa: E402
from swapflow.stack.supervisor import Stack, UpOptions  # noqa: E402

TARGET_RATIO = 1.5


@dataclass
class Phase:
    name: str
    cpu: dict[str, float] = field(default_factory=dict)  # share of a core per process while it ran
    window: tuple[datetime, datetime] | None = None
    event_delays: list[float] = field(default_factory=list)  # other cabinets' events: stamped → recorded
    completed: list[float] = field(default_factory=list)  # seconds from the API call to completion
    failed: dict[str, int] = field(default_factory=dict)
    legs: dict[str, list[float]] = field(default_factory=dict)  # seconds per leg of each completed swap

    def leg(self, name: str, seconds: float) -> None:
        self.legs.setdefault(name, []).append(seconds)

    def fail(self, reason: str) -> None:
        self.failed[reason] = self.failed.get(reason, 0) + 1


async def one_swap(http: httpx.AsyncClient, rider: BenchRider, cabinet: SimulatedCabinet, phase: Phase) -> None:
    """One rider's swap through the API and at the doors, timed to its completion."""
    began = time.perf_counter()
    response = await http.post(
        "/v1/swaps",
        json={"rider_id": rider.rider_id, "cabinet_id": cabinet.cabinet_id},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    swap = response.json()
    marks = [("API call → return door open", time.perf_counter())]
    if response.status_code >= 400 or swap["stage"] != "return_door_open":
        phase.fail(swap.get("failure_reason") or swap.get("title") or str(response.status_code))
        return
    # At a command-only cabinet the swap moves on once the command is sent: the rider waits for the door.
    while not cabinet.door_open(swap["return_slot_no"]):
        await asyncio.sleep(0.05)
    await cabinet.insert_battery(swap["return_slot_no"], rider.battery)
    marks.append(("door open ack → pack in", time.perf_counter()))
    while True:
        swap = (await http.get(f"/v1/swaps/{swap['id']}")).json()
        if swap["stage"] == "charged_door_open" and cabinet.door_open(swap["charged_slot_no"]):
            marks.append(("pack in → charged door open", time.perf_counter()))
            rider.battery = await cabinet.take_battery(swap["charged_slot_no"])
        if swap["status"] != "in_progress":
            break
        await asyncio.sleep(0.1)
    if swap["status"] == "completed":
        phase.completed.append(time.perf_counter() - began)
        marks.append(("pack out → completed", time.perf_counter()))
        start = began
        for name, end in marks:
            phase.leg(name + (" (command-only)" if cabinet.command_only else ""), end - start)
            start = end
    else:
        phase.fail(swap["failure_reason"])


async def drive(
    http: httpx.AsyncClient,
    riders: list[BenchRider],
    cabinets: dict[str, SimulatedCabinet],
    by_city: dict[str, list[str]],
    phase: Phase,
    rate: float,
    seconds: float,
) -> None:
    """Open-loop arrivals at `rate` a second for `seconds`; each takes an idle rider to a cabinet of
    their city; waits for the swaps started to end. Every phase draws the same riders and cabinets (the
    same share of command-only cabinets, whose swaps wait for the packs' own reports), so their figures
    compare."""
    idle = list(riders)
    rng = random.Random(7)
    tasks: set[asyncio.Task[None]] = set()

    async def run(rider: BenchRider) -> None:
        try:
            await one_swap(http, rider, cabinets[rng.choice(by_city[rider.city])], phase)
        except Exception as exc:  # a benchmark records failures, it does not stop on them
            phase.fail(type(exc).__name__)
        finally:
            idle.append(rider)

    start = time.perf_counter()
    n = 0
    while time.perf_counter() - start < seconds:
        await asyncio.sleep(max(0.0, start + n / rate - time.perf_counter()))
        n += 1
        if idle:
            task = asyncio.create_task(run(idle.pop(rng.randrange(len(idle)))))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=300)


async def event_delays(db: Database, phase: Phase, flooded: str) -> list[float]:
    """Seconds from each event's own timestamp to its being recorded, at cabinets other than `flooded`."""
    assert phase.window is not None
    async with db.sessions() as session:
        rows = await session.execute(
            select(DeviceMessage.payload, DeviceMessage.received_at).where(
                DeviceMessage.kind.in_(["battery_inserted", "battery_removed", "door_closed", "door_opened"]),
                DeviceMessage.cabinet_id != flooded,
                DeviceMessage.received_at.between(*phase.window),
            )
        )
        return [(as_utc(at) - datetime.fromisoformat(payload["ts"])).total_seconds() for payload, at in rows]


def report(phase: Phase) -> str:
    failed = sum(phase.failed.values())
    return (
        f"{phase.name:<10} {len(phase.completed):>5} completed {failed:>4} failed   "
        f"p50 {pct(phase.completed, 0.5):>6.0f} ms   p95 {pct(phase.completed, 0.95):>6.0f} ms"
        + (f"   failures: {phase.failed}" if failed else "")
        + "\n           CPU: "
        + ", ".join(f"{name} {100 * share:.0f}%" for name, share in phase.cpu.items())
        + f"\n           {'event stamped → recorded':<30} p50 {pct(phase.event_delays, 0.5):>6.0f} ms   "
        f"p95 {pct(phase.event_delays, 0.95):>6.0f} ms"
        + "".join(
            f"\n           {name:<30} p50 {pct(times, 0.5):>6.0f} ms   p95 {pct(times, 0.95):>6.0f} ms"
            for name, times in phase.legs.items()
        )
    )


async def measured(stack: Stack, phase: Phase, work: Awaitable[None]) -> None:
    """Run `work`, noting the CPU each process of the stack (and this one) used meanwhile."""
    before, began, since = stack_cpu(stack), time.perf_counter(), datetime.now(UTC)
    await work
    after, seconds = stack_cpu(stack), time.perf_counter() - began
    phase.window = (since, datetime.now(UTC))
    phase.cpu = {name: (after[name] - before.get(name, 0.0)) / seconds for name in after}


async def main(args: argparse.Namespace) -> None:
    settings, data_dir, admin = bench_network("swapflow-flood-", args.stations_per_city, args.riders_per_city)

    stack = Stack(settings, UpOptions(simulate=False, seed=False))
    print(f"starting the embedded stack in {data_dir} …", flush=True)
    await stack.start()
    db = Database(settings.effective_database_url)
    cabinet_tasks: list[asyncio.Task[None]] = []
    try:
        async with db.sessions() as session:
            city_of = dict(
                (
                    await session.execute(
                        select(Cabinet.id, Station.city_code).join(Station, Station.id == Cabinet.station_id)
                    )
                ).all()
            )
            rows = (
                await session.execute(
                    select(Rider, Battery).join(
                        Battery, (Battery.custodian_kind == CustodianKind.RIDER) & (Battery.custodian_ref == Rider.id)
                    )
                )
            ).all()
        flooded = sorted(city_of)[0]  # a cabinet of the busiest city: its neighbours swap through the flood
        cabinets = await build_cabinets(
            settings, db, cabinet_ids=sorted(set(city_of) - {flooded}), charge_speedup=600.0, telemetry_interval_s=10.0
        )
        cabinet_tasks = [asyncio.create_task(c.run()) for c in cabinets.values()]
        await asyncio.wait_for(asyncio.gather(*(c.ready.wait() for c in cabinets.values())), 60)
        by_city: dict[str, list[str]] = {}
        for cabinet_id in cabinets:
            by_city.setdefault(city_of[cabinet_id], []).append(cabinet_id)
        riders = [BenchRider(r.id, r.city_code, sim_battery(b)) for r, b in rows if r.city_code in by_city]
        await asyncio.sleep(2)  # the adapter takes the births in
        print(
            f"{len(cabinets)} simulated cabinets, {len(riders)} riders, {args.rate} swaps/s for "
            f"{args.phase_seconds:.0f} s per phase; flood: {args.flood_rate:.0f} junk messages/s from {flooded}\n",
            flush=True,
        )
        login = client_login(settings, flooded)
        messages = junk(settings.mqtt.topic_prefix, flooded, int(args.flood_rate * args.phase_seconds))
        phases = [Phase("unflooded"), Phase("flooded")]
        async with httpx.AsyncClient(
            base_url=settings.api.effective_url,
            timeout=120,
            headers={"Authorization": f"Bearer {admin}"},
            limits=httpx.Limits(max_connections=200),
        ) as http:
            await measured(
                stack, phases[0], drive(http, riders, cabinets, by_city, phases[0], args.rate, args.phase_seconds)
            )
            phases[0].event_delays = await event_delays(db, phases[0], flooded)
            print(report(phases[0]), flush=True)
            flooding = asyncio.create_task(
                flood(
                    lambda: mqtt_client(settings, flooded, login=login),
                    messages,
                    args.flood_rate,
                    deadline_s=args.phase_seconds,
                )
            )
            await measured(
                stack, phases[1], drive(http, riders, cabinets, by_city, phases[1], args.rate, args.phase_seconds)
            )
            sent = await flooding
            for phase in phases:
                phase.event_delays = await event_delays(db, phase, flooded)
            print(report(phases[1]), flush=True)
        async with db.sessions() as session:
            letters = await session.scalar(select(func.count()).select_from(DeadLetter)) or 0
            counted = await session.scalar(select(func.sum(DeadLetter.occurrences))) or 0
        unflooded, flooded_p95 = pct(phases[0].completed, 0.95), pct(phases[1].completed, 0.95)
        ratio = flooded_p95 / unflooded
        print(f"\nflood: {sent} junk messages sent; dead letters: {counted} counted on {letters} rows")
        print(
            f"swap p95 at other cabinets: unflooded {unflooded:.0f} ms, flooded {flooded_p95:.0f} ms = "
            f"{ratio:.2f}× (target ≤ {TARGET_RATIO}×: {'met' if ratio <= TARGET_RATIO else 'NOT met'})"
        )
    finally:
        for task in cabinet_tasks:
            task.cancel()
        await asyncio.gather(*cabinet_tasks, return_exceptions=True)
        await db.dispose()
        await stack.stop()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=2.0, help="swaps started a second")
    parser.add_argument("--phase-seconds", type=float, default=60.0)
    parser.add_argument("--flood-rate", type=float, default=300.0, help="junk messages a second")
    parser.add_argument("--stations-per-city", type=int, default=8)
    parser.add_argument("--riders-per-city", type=int, default=40)
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
