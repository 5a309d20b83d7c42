"""Fault injection in the simulator: the `--faults` plan, each cabinet fault at rate 1 on a real broker, and
each rider fault at rate 1 against a scripted rider API (the platform's answers are not under test here,
only what the simulated rider does at the cabinet)."""

from __future__ import annotations

import asyncio
import json
import random
import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest

from swapflow.infra.mqtt import mqtt_client
from swapflow.protocol.v1 import Channel, CommandAction, battery_topic
from swapflow.settings import Settings
from swapflow.simulator.battery import SimBattery
from swapflow.simulator.cabinet import SimulatedCabinet
from swapflow.simulator.faults import FAULT_NAMES, FaultPlan, FaultSpecError, FaultStats
from swapflow.simulator.fleet import fleet_stats
from swapflow.simulator.riders import HOT_PACK_C, RiderStats, SimulatedRider
from tests.test_simulator import QUIET_S, Wire, running

CABINET = "cab-faults-1"

# ------------------------------------------------------------------------------------ the plan


def test_plan_parses_rates_payment_faults_and_the_offline_window() -> None:
    plan = FaultPlan.parse(" jam=0.02, drop_ack=0.5,offline=1,offline_seconds=3.5,decline=0.1,payment_timeout=0 ,")
    assert dict(plan.rates) == {"jam": 0.02, "drop_ack": 0.5, "offline": 1.0, "decline": 0.1, "payment_timeout": 0.0}
    assert plan.offline_seconds == 3.5
    assert plan.rate("jam") == 0.02 and plan.rate("walk_away") == 0.0
    assert plan.payment_rates() == {"sandbox_decline_rate": 0.1, "sandbox_timeout_rate": 0.0}
    # The settings the CLI hands the sandbox provider accept them as they are.
    assert Settings().updated(payments=plan.payment_rates()).payments.sandbox_decline_rate == 0.1
    empty = FaultPlan.parse("")
    assert dict(empty.rates) == {} and empty.payment_rates() == {} and empty.offline_seconds == 20.0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("jamm=0.1", "unknown fault 'jamm' (known: jam, drop_ack"),
        ("jam=1.5", "rate of fault 'jam' must be a number from 0 to 1, got 1.5"),
        ("jam=-0.1", "rate of fault 'jam' must be a number from 0 to 1, got -0.1"),
        ("jam=nan", "rate of fault 'jam' must be a number from 0 to 1, got nan"),
        ("jam=often", "value of 'jam' is not a number: 'often'"),
        ("jam", "expected name=rate, got 'jam'"),
        ("=0.1", "expected name=rate, got '=0.1'"),
        ("jam=0.1,jam=0.2", "fault 'jam' is given twice"),
        ("offline_seconds=0", "offline_seconds must be a positive number"),
    ],
)
def test_plan_refuses_what_it_cannot_inject(spec: str, message: str) -> None:
    with pytest.raises(FaultSpecError, match="^" + re.escape(message)):
        FaultPlan.parse(spec)


def test_rolls_follow_the_rates_and_are_reproducible_with_a_seed() -> None:
    plan = FaultPlan.parse("jam=0.25,walk_away=1")
    never, always = random.Random(1), random.Random(1)
    assert not any(plan.roll("duplicate", never) for _ in range(100))
    assert all(plan.roll("walk_away", always) for _ in range(100))

    def rolls(seed: int) -> list[bool]:
        rng = random.Random(seed)
        return [plan.roll("jam", rng) for _ in range(4_000)]

    first = rolls(42)
    assert first == rolls(42) and first != rolls(43)
    assert 0.22 < sum(first) / len(first) < 0.28
    with pytest.raises(ValueError, match="unknown fault"):
        plan.roll("meteor", random.Random())


def test_fault_counts_reach_the_fleet_stats() -> None:
    faults = FaultStats()
    for name in ("jam", "no_insert", "jam"):
        faults.count(name)
    stats = fleet_stats({}, [], RiderStats(), faults)
    assert stats.faults_injected == {"jam": 2, "no_insert": 1} and stats.faults_total == 3
    assert list(faults.by_kind()) == [n for n in FAULT_NAMES if n in ("jam", "no_insert")]


# ------------------------------------------------------------------------------------ cabinet faults


@pytest.fixture
def sim_settings(mqtt_url: str) -> Settings:
    return Settings().updated(mqtt={"url": mqtt_url, "topic_prefix": f"swapflow-test-{uuid.uuid4().hex[:10]}/v1"})


def faulty_cabinet(settings: Settings, spec: str) -> SimulatedCabinet:
    return SimulatedCabinet(
        settings,
        CABINET,
        {1: SimBattery("BAT-F1", soc=100.0), 3: None},
        telemetry_interval_s=60.0,
        faults=FaultPlan.parse(spec),
        rng=random.Random(7),
        keepalive_s=5,
        offline_delay_s=(0.0, 0.0),
    )


Scene = Callable[[str], AbstractAsyncContextManager[tuple[SimulatedCabinet, Wire]]]


@pytest.fixture
def on_the_wire(sim_settings: Settings) -> Scene:
    """Runs a cabinet with the given fault plan and a wire to it: `async with on_the_wire(spec)`."""

    @asynccontextmanager
    async def start(spec: str) -> AsyncIterator[tuple[SimulatedCabinet, Wire]]:
        cabinet = faulty_cabinet(sim_settings, spec)
        async with running(cabinet), Wire.open(sim_settings, CABINET) as wire:
            yield cabinet, wire

    return start


async def test_jam_leaves_the_door_shut_and_the_command_unanswered(on_the_wire: Scene) -> None:
    async with on_the_wire("jam=1") as (cabinet, wire):
        jammed = await wire.command(CommandAction.OPEN_DOOR, 3)
        await wire.ack(await wire.command(CommandAction.READ_BMS, 1))  # acks are in order: a fence
    assert wire.acks_of(jammed) == [] and wire.events("door_opened", 3) == []
    assert not cabinet.door_open(3) and cabinet.fault_stats.by_kind() == {"jam": 1}


async def test_drop_ack_opens_the_door_and_loses_the_ack(on_the_wire: Scene) -> None:
    async with on_the_wire("drop_ack=1") as (cabinet, wire):
        await wire.command(CommandAction.OPEN_DOOR, 3)
        await wire.expect(Channel.EVENTS, lambda m: m["type"] == "door_opened")
        await asyncio.sleep(QUIET_S)
    assert cabinet.door_open(3) and wire.seen[Channel.ACKS] == []
    assert cabinet.fault_stats.by_kind() == {"drop_ack": 1}


async def test_duplicate_publishes_each_event_twice_with_one_id(on_the_wire: Scene) -> None:
    async with on_the_wire("duplicate=1") as (cabinet, wire):
        await wire.ack(await wire.command(CommandAction.OPEN_DOOR, 3))
        await cabinet.insert_battery(3, SimBattery("BAT-RIDER", soc=10.0))
        await wire.expect(Channel.EVENTS, lambda m: m["type"] == "door_closed")
        await asyncio.sleep(QUIET_S)
    ids = [m["event_id"] for m in wire.seen[Channel.EVENTS]]
    assert len(ids) == 6 and len(set(ids)) == 3  # door_opened, battery_inserted, door_closed: each twice
    assert ids[0::2] == ids[1::2]
    assert cabinet.fault_stats.by_kind() == {"duplicate": 3}


async def test_offline_drops_the_cabinet_for_the_window_and_it_comes_back(on_the_wire: Scene) -> None:
    async with on_the_wire("offline=1,offline_seconds=0.5") as (cabinet, wire):
        await wire.expect(Channel.STATE, lambda m: m["online"])
        loop = asyncio.get_running_loop()
        started = loop.time()
        cabinet.swap_started()
        cabinet.swap_started()  # a second swap during the outage does not stack another one
        await wire.expect(Channel.STATE, lambda m: not m["online"])  # the will: no clean DISCONNECT
        await asyncio.wait_for(cabinet.ready.wait(), 10)
        await wire.expect(Channel.STATE, lambda m: m["online"] and m["ts"] > wire.seen[Channel.STATE][0]["ts"])
        back_after = loop.time() - started
    assert [m["online"] for m in wire.seen[Channel.STATE]][-2:] == [False, True]
    assert back_after >= 0.5 and cabinet.fault_stats.by_kind() == {"offline": 1}


async def test_duplicate_also_repeats_a_command_only_packs_arrival_report(sim_settings: Settings) -> None:
    cabinet = SimulatedCabinet(
        sim_settings,
        CABINET,
        {3: None},
        command_only=True,
        battery_report_interval_s=60.0,
        insert_report_delay_s=0.1,
        faults=FaultPlan.parse("duplicate=1"),
    )
    seen: list[dict[str, Any]] = []
    async with mqtt_client(sim_settings, f"wire-{uuid.uuid4().hex[:8]}") as client, running(cabinet):
        await client.subscribe(battery_topic(sim_settings.mqtt.topic_prefix, "+"), qos=1)
        cabinet.slots[3].door_open = True  # as an open_door command leaves it
        await cabinet.insert_battery(3, SimBattery("BAT-DUP", soc=10.0))
        async with asyncio.timeout(5):
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                seen.append(json.loads(message.payload))
                if len(seen) == 2:
                    break
    assert seen[0] == seen[1] and seen[0]["slot_no"] == 3
    assert cabinet.fault_stats.by_kind() == {"duplicate": 1}


# ------------------------------------------------------------------------------------ rider faults


class ScriptedApi:
    """The rider API for one swap at one cabinet, answering as the platform would: the return door opens
    when the swap starts; a pack of the rider's in the return slot opens the charged door; the charged
    pack gone completes the swap. Anything else fails it after `patience` polls."""

    def __init__(self, cabinet: SimulatedCabinet, rider_serial: str, *, patience: int = 40) -> None:
        self.cabinet = cabinet
        self.rider_serial = rider_serial
        self.patience = patience
        self.swap: dict[str, Any] = {}
        self.polls = 0

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path == "/v1/cabinets":
            return httpx.Response(200, json=[{"id": CABINET, "online": True, "ready_batteries": 1, "free_slots": 1}])
        if request.method == "POST" and request.url.path == "/v1/swaps":
            self.cabinet.slots[3].door_open = True
            self.swap = {
                "id": "swap-1",
                "status": "in_progress",
                "stage": "return_door_open",
                "return_slot_no": 3,
                "charged_slot_no": 1,
            }
            return httpx.Response(201, json=self.swap)
        self.polls += 1
        returned = self.cabinet.battery_in(3)
        if self.swap["stage"] == "return_door_open" and returned is not None and not self.cabinet.door_open(3):
            if returned.serial == self.rider_serial and returned.temperature_c < 60:
                self.cabinet.slots[1].door_open = True
                self.swap |= {"stage": "charged_door_open"}
                self.polls = 0
        elif self.swap["stage"] == "charged_door_open" and self.cabinet.battery_in(1) is None:
            self.swap |= {"stage": "completed", "status": "completed"}
        if self.polls > self.patience and self.swap["status"] == "in_progress":
            self.swap |= {"stage": "failed", "status": "failed", "failure_reason": "scripted timeout"}
        return httpx.Response(200, json=self.swap)


async def swap_with(spec: str, **rider_options: Any) -> tuple[SimulatedRider, SimulatedCabinet, dict[str, Any]]:
    """One swap by a rider with the given fault plan at an idle (unconnected) cabinet."""
    cabinet = SimulatedCabinet(Settings(), CABINET, {1: SimBattery("BAT-CHARGED", soc=100.0), 3: None})
    own = SimBattery("BAT-RIDER", soc=8.0, temperature_c=30.0)
    api = ScriptedApi(cabinet, own.serial)
    async with httpx.AsyncClient(transport=api.transport()) as http:
        rider = SimulatedRider(
            "http://api.test",
            "rider-1",
            own,
            0.0,
            0.0,
            {CABINET: cabinet},
            http,
            poll_interval_s=0.01,
            rng=random.Random(3),
            faults=FaultPlan.parse(spec),
            door_wait_s=0.5,
            **rider_options,
        )
        swap = await rider.swap_once()
    assert swap is not None
    return rider, cabinet, swap


async def test_without_faults_the_scripted_swap_completes() -> None:
    rider, cabinet, swap = await swap_with("")
    assert swap["status"] == "completed"
    assert rider.battery is not None and rider.battery.serial == "BAT-CHARGED"
    assert rider.fault_stats.total == 0


async def test_no_insert_rider_never_puts_the_pack_in() -> None:
    rider, cabinet, swap = await swap_with("no_insert=1")
    assert swap["status"] == "failed" and cabinet.battery_in(3) is None
    assert rider.battery is not None and rider.battery.serial == "BAT-RIDER"
    assert rider.fault_stats.by_kind() == {"no_insert": 1} and rider.stats.stranded == 0


async def test_wrong_pack_rider_puts_in_an_unregistered_pack_and_keeps_their_own() -> None:
    rider, cabinet, swap = await swap_with("wrong_pack=1")
    foreign = cabinet.battery_in(3)
    assert swap["status"] == "failed"
    assert foreign is not None and foreign.serial.startswith("FAKE-") and foreign.serial != "BAT-RIDER"
    assert rider.battery is not None and rider.battery.serial == "BAT-RIDER"
    assert rider.fault_stats.by_kind() == {"wrong_pack": 1}


async def test_hot_pack_goes_in_at_70_degrees() -> None:
    rider, cabinet, swap = await swap_with("hot_pack=1")
    returned = cabinet.battery_in(3)
    assert returned is not None and returned.serial == "BAT-RIDER"
    assert returned.reading().temperature_c == HOT_PACK_C == 70.0  # the cabinet is idle: nothing cooled it
    assert swap["status"] == "failed" and rider.battery is None and rider.stats.stranded == 1
    assert rider.fault_stats.by_kind() == {"hot_pack": 1}


async def test_walk_away_rider_never_takes_the_charged_pack() -> None:
    rider, cabinet, swap = await swap_with("walk_away=1")
    charged = cabinet.battery_in(1)
    assert charged is not None and charged.serial == "BAT-CHARGED" and cabinet.door_open(1)
    assert swap["status"] == "failed" and rider.battery is None and rider.stats.stranded == 1
    assert rider.fault_stats.by_kind() == {"walk_away": 1}


async def test_slow_insert_rider_dawdles_then_swaps() -> None:
    started = asyncio.get_running_loop().time()
    rider, _, swap = await swap_with("slow_insert=1", slow_insert_s=(0.4, 0.4))
    assert swap["status"] == "completed" and rider.battery is not None
    assert asyncio.get_running_loop().time() - started >= 0.4
    assert rider.fault_stats.by_kind() == {"slow_insert": 1}
