"""A whole simulated network in one process: the cabinets (reporting and command-only) and the riders
holding packs, as the database describes them at start-up, with the faults of a `FaultPlan` injected.
Re-reads the database on every start, so it survives restarts."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import httpx
from sqlalchemy import select

from swapflow.db.engine import Database
from swapflow.db.network import Battery, Cabinet, Rider, Slot, Station
from swapflow.demo.accounts import load_demo_tokens
from swapflow.domain.network import BatteryStatus, CabinetCapability, CabinetProtocol, CustodianKind
from swapflow.domain.swaps import RiderStatus
from swapflow.settings import Settings
from swapflow.simulator.battery import DEFAULT_SPEEDUP, SimBattery
from swapflow.simulator.cabinet import SimulatedCabinet
from swapflow.simulator.faults import FaultPlan, FaultStats
from swapflow.simulator.riders import RiderStats, SimulatedRider
from swapflow.simulator.technicians import build_technicians
from swapflow.simulator.tower_cabinet import TowerCabinet

log = logging.getLogger(__name__)

_STATS_INTERVAL_S = 5.0
_READY_WAIT_S = 30.0


@dataclass(frozen=True)
class FleetStats:
    """A snapshot of the fleet for a progress line."""

    cabinets: int
    cabinets_connected: int
    riders: int
    swaps_done: int
    swaps_failed: int
    in_flight: int
    no_cabinet: int
    http_errors: int
    stranded: int
    p50_s: float | None
    p95_s: float | None
    faults_injected: dict[str, int] = field(default_factory=dict)
    """Faults injected so far, by name (see `swapflow.simulator.faults`)."""

    @property
    def faults_total(self) -> int:
        """All faults injected so far."""
        return sum(self.faults_injected.values())


def sim_battery(row: Battery) -> SimBattery:
    """The simulated pack for a battery row, starting from its last known reading."""
    return SimBattery(
        serial=row.serial, soc=row.soc, soh=row.soh, temperature_c=row.temperature_c, cycle_count=row.cycle_count
    )


async def build_cabinets(
    settings: Settings,
    db: Database,
    *,
    charge_speedup: float = DEFAULT_SPEEDUP,
    telemetry_interval_s: float = 10.0,
    battery_report_interval_s: float = 5.0,
    cabinet_ids: Collection[str] | None = None,
    faults: FaultPlan | None = None,
    fault_stats: FaultStats | None = None,
    seed: int | None = None,
) -> dict[str, SimulatedCabinet]:
    """One simulated cabinet per cabinet in the database (or those named), with the packs its slots hold;
    command-only and tower-protocol cabinets are simulated as such. With `seed`, each cabinet rolls its
    faults from a stream of its own that depends only on the seed and its id, so a run's fault rates are
    reproducible."""
    query = (
        select(Slot, Battery)
        .outerjoin(Battery, Battery.serial == Slot.battery_serial)
        .order_by(Slot.cabinet_id, Slot.slot_no)
    )
    if cabinet_ids is not None:
        query = query.where(Slot.cabinet_id.in_(list(cabinet_ids)))
    layouts: dict[str, dict[int, SimBattery | None]] = {}
    cabinets: dict[str, Cabinet] = {}
    async with db.sessions() as session:
        for slot, battery in (await session.execute(query)).tuples():
            layouts.setdefault(slot.cabinet_id, {})[slot.slot_no] = sim_battery(battery) if battery else None
        for cabinet in await session.scalars(select(Cabinet).where(Cabinet.id.in_(list(layouts)))):
            cabinets[cabinet.id] = cabinet
    stats = fault_stats or FaultStats()
    return {
        # Tower-protocol cabinets speak TCP to the gateway; the rest v1 on MQTT.
        cabinet_id: (TowerCabinet if cabinets[cabinet_id].protocol == CabinetProtocol.TOWER else SimulatedCabinet)(
            settings,
            cabinet_id,
            slots,
            telemetry_interval_s=telemetry_interval_s,
            charge_speedup=charge_speedup,
            firmware=cabinets[cabinet_id].firmware or "1.4.2",
            command_only=cabinets[cabinet_id].capability == CabinetCapability.COMMAND_ONLY,
            battery_report_interval_s=battery_report_interval_s,
            faults=faults,
            fault_stats=stats,
            rng=random.Random(f"{seed}:{cabinet_id}") if seed is not None else None,
        )
        for cabinet_id, slots in layouts.items()
    }


async def build_riders(
    settings: Settings,
    db: Database,
    cabinets: dict[str, SimulatedCabinet],
    http: httpx.AsyncClient,
    *,
    count: int = 20,
    think_time_s: tuple[float, float] = (5.0, 20.0),
    ride_speedup: float = DEFAULT_SPEEDUP,
    stats: RiderStats | None = None,
    seed: int | None = None,
    faults: FaultPlan | None = None,
    fault_stats: FaultStats | None = None,
    tokens: dict[str, str] | None = None,
) -> list[SimulatedRider]:
    """Up to `count` active riders who hold a pack, in cities with simulated cabinets, each placed near a
    random station of their city that has one. With `seed`, the choice of riders and every rider's
    randomness (think times, fault rolls) are reproducible. `tokens` are the riders' bearer tokens."""
    rng = random.Random(seed)
    stats = stats or RiderStats()
    fault_stats = fault_stats or FaultStats()
    async with db.sessions() as session:
        stations = (
            (
                await session.execute(
                    select(Station.city_code, Station.lat, Station.lon)
                    .join(Cabinet, Cabinet.station_id == Station.id)
                    .where(Cabinet.id.in_(list(cabinets)))
                )
            )
            .tuples()
            .all()
        )
        places: dict[str, list[tuple[float, float]]] = {}
        for city_code, lat, lon in stations:
            places.setdefault(city_code, []).append((lat, lon))
        holders = (
            (
                await session.execute(
                    select(Rider, Battery)
                    .join(
                        Battery, (Battery.custodian_kind == CustodianKind.RIDER) & (Battery.custodian_ref == Rider.id)
                    )
                    .where(
                        Rider.status == RiderStatus.ACTIVE,
                        Rider.city_code.in_(list(places)),
                        Battery.status == BatteryStatus.IN_SERVICE,
                    )
                    .order_by(Rider.id)
                )
            )
            .tuples()
            .all()
        )
    chosen = rng.sample(holders, min(count, len(holders)))
    riders = []
    for rider, battery in sorted(chosen, key=lambda pair: pair[0].id):
        lat, lon = rng.choice(places[rider.city_code])
        riders.append(
            SimulatedRider(
                settings.api.effective_url,
                rider.id,
                sim_battery(battery),
                lat + rng.uniform(-0.01, 0.01),
                lon + rng.uniform(-0.01, 0.01),
                cabinets,
                http,
                think_time_s=think_time_s,
                ride_speedup=ride_speedup,
                stats=stats,
                rng=random.Random(rng.random()),
                faults=faults,
                fault_stats=fault_stats,
                token=(tokens or {}).get(rider.id),
            )
        )
    return riders


def fleet_stats(
    cabinets: dict[str, SimulatedCabinet],
    riders: list[SimulatedRider],
    stats: RiderStats,
    fault_stats: FaultStats | None = None,
) -> FleetStats:
    """The fleet's counters now."""
    return FleetStats(
        cabinets=len(cabinets),
        cabinets_connected=sum(1 for c in cabinets.values() if c.ready.is_set()),
        riders=len(riders),
        swaps_done=stats.done,
        swaps_failed=stats.failed,
        in_flight=stats.in_flight,
        no_cabinet=stats.no_cabinet,
        http_errors=stats.http_errors,
        stranded=stats.stranded,
        p50_s=stats.percentile(0.5),
        p95_s=stats.percentile(0.95),
        faults_injected=fault_stats.by_kind() if fault_stats else {},
    )


async def run_fleet(
    settings: Settings,
    *,
    riders: int = 20,
    think_time_s: tuple[float, float] = (5, 20),
    charge_speedup: float = DEFAULT_SPEEDUP,
    telemetry_interval_s: float = 10.0,
    battery_report_interval_s: float = 5.0,
    stats_callback: Callable[[FleetStats], None] | None = None,
    faults: str | FaultPlan | None = None,
    seed: int | None = None,
) -> None:
    """Run the simulated cabinets and riders until cancelled. The database is read once at start;
    after that everything flows through MQTT and the API, as with real hardware.

    `faults` is a `FaultPlan` or its string form (`"jam=0.02,no_insert=0.01"`; FaultSpecError when it
    does not parse). Payment faults in it are left to the sandbox provider's settings. `seed` makes the
    choice of riders and every fault roll reproducible."""
    plan = FaultPlan.parse(faults) if isinstance(faults, str) else faults
    fault_stats = FaultStats()
    rider_stats = RiderStats()
    async with httpx.AsyncClient(timeout=30.0) as http:
        db = Database(settings.effective_database_url, pool_size=2)
        try:
            cabinets = await build_cabinets(
                settings,
                db,
                charge_speedup=charge_speedup,
                telemetry_interval_s=telemetry_interval_s,
                battery_report_interval_s=battery_report_interval_s,
                faults=plan,
                fault_stats=fault_stats,
                seed=seed,
            )
            tokens = load_demo_tokens(settings.data_dir)
            sim_riders = await build_riders(
                settings,
                db,
                cabinets,
                http,
                count=riders,
                think_time_s=think_time_s,
                ride_speedup=charge_speedup,
                stats=rider_stats,
                seed=seed,
                faults=plan,
                fault_stats=fault_stats,
                tokens=tokens.riders,
            )
            technicians = await build_technicians(settings, db, cabinets, http, tokens.operators)
        finally:
            await db.dispose()
        command_only = sum(1 for c in cabinets.values() if c.command_only)
        log.info("simulating %d cabinets (%d command-only) and %d riders", len(cabinets), command_only, len(sim_riders))
        if plan is not None and plan.rates:
            log.info("injecting faults: %s", ", ".join(f"{name}={rate:g}" for name, rate in plan.rates.items()))
        async with asyncio.TaskGroup() as tasks:
            for cabinet in cabinets.values():
                tasks.create_task(cabinet.run())
            await _wait_connected(cabinets)
            for rider in sim_riders:
                tasks.create_task(rider.run())
            for technician in technicians:
                tasks.create_task(technician.run())
            report = stats_callback or _log_stats
            while True:
                await asyncio.sleep(_STATS_INTERVAL_S)
                report(fleet_stats(cabinets, sim_riders, rider_stats, fault_stats))


async def _wait_connected(cabinets: dict[str, SimulatedCabinet]) -> None:
    """Give the cabinets a moment to connect, so the first riders find them online."""
    waits = [asyncio.create_task(c.ready.wait()) for c in cabinets.values()]
    if not waits:
        return
    _, late = await asyncio.wait(waits, timeout=_READY_WAIT_S)
    for wait in late:
        wait.cancel()
    if late:
        log.warning("%d of %d cabinets not connected yet; riders start anyway", len(late), len(waits))


def _log_stats(stats: FleetStats) -> None:
    by_kind = ", ".join(f"{name} {n}" for name, n in stats.faults_injected.items())
    log.info(
        "fleet: %d/%d cabinets connected, %d riders (%d stranded), %d swaps done, %d failed, %d in flight, "
        "p50 %s s, p95 %s s, %d faults injected%s",
        stats.cabinets_connected,
        stats.cabinets,
        stats.riders,
        stats.stranded,
        stats.swaps_done,
        stats.swaps_failed,
        stats.in_flight,
        _fmt(stats.p50_s),
        _fmt(stats.p95_s),
        stats.faults_total,
        f" ({by_kind})" if by_kind else "",
    )


def _fmt(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f}"
