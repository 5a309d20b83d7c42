"""The simulated cabinet against a real broker: what it publishes for each command and physical action,
its fault knobs, its birth and last-will; the pack model; loading a fleet from the database."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomqtt
import httpx
import pytest
from sqlalchemy import select

from swapflow.db.engine import Database
from swapflow.db.network import Battery, Cabinet, Slot
from swapflow.domain.network import CustodianKind
from swapflow.infra.mqtt import mqtt_client
from swapflow.protocol.v1 import Channel, Command, CommandAction, cabinet_topic
from swapflow.settings import Settings
from swapflow.simulator.battery import CC_CURRENT_A, CV_KNEE_SOC, SimBattery
from swapflow.simulator.cabinet import PhysicalActionError, SimulatedCabinet
from swapflow.simulator.fleet import build_cabinets, build_riders

CABINET = "cab-sim-1"
QUIET_S = 0.5  # how long "nothing arrives" is watched for


class Wire:
    """The platform's side of the broker for one cabinet: sends commands, collects what comes back."""

    def __init__(self, client: aiomqtt.Client, settings: Settings, cabinet_id: str) -> None:
        self.client = client
        self.settings = settings
        self.cabinet_id = cabinet_id
        self.seen: dict[Channel, list[dict[str, Any]]] = {c: [] for c in Channel}
        self._arrived = asyncio.Event()

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings, cabinet_id: str) -> AsyncIterator[Wire]:
        """Connected and subscribed to every channel the cabinet publishes on."""
        async with mqtt_client(settings, f"wire-{uuid.uuid4().hex[:8]}") as client:
            wire = cls(client, settings, cabinet_id)
            await client.subscribe(f"{settings.mqtt.topic_prefix}/cabinets/{cabinet_id}/+", qos=1)
            reader = asyncio.create_task(wire._read())
            try:
                yield wire
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)

    async def _read(self) -> None:
        mine = f"{self.settings.mqtt.topic_prefix}/cabinets/{self.cabinet_id}/+"
        async for message in self.client.messages:
            if not message.topic.matches(mine):  # amqtt also pushes retained messages others subscribed to
                continue
            channel = Channel(message.topic.value.rsplit("/", 1)[1])
            assert isinstance(message.payload, bytes)
            self.seen[channel].append(json.loads(message.payload))
            self._arrived.set()

    async def command(
        self, action: CommandAction, slot_no: int | None, *, deadline_s: float = 10.0, command_id: str | None = None
    ) -> str:
        """Publish a command; returns its id."""
        now = datetime.now(UTC)
        command = Command(
            command_id=command_id or uuid.uuid4().hex,
            cabinet_id=self.cabinet_id,
            action=action,
            slot_no=slot_no,
            issued_at=now,
            deadline=now + timedelta(seconds=deadline_s),
        )
        topic = cabinet_topic(self.settings.mqtt.topic_prefix, self.cabinet_id, Channel.COMMANDS)
        await self.client.publish(topic, command.model_dump_json(exclude_none=True), qos=1)
        return command.command_id

    async def expect(
        self, channel: Channel, match: Callable[[dict[str, Any]], bool], within_s: float = 5.0
    ) -> dict[str, Any]:
        """The first message on `channel` that matches, waiting for it if need be."""
        async with asyncio.timeout(within_s):
            while True:
                for message in self.seen[channel]:
                    if match(message):
                        return message
                self._arrived.clear()
                await self._arrived.wait()

    async def ack(self, command_id: str) -> dict[str, Any]:
        """The acknowledgement of a command."""
        return await self.expect(Channel.ACKS, lambda m: m["command_id"] == command_id)

    def acks_of(self, command_id: str) -> list[dict[str, Any]]:
        return [m for m in self.seen[Channel.ACKS] if m["command_id"] == command_id]

    def events(self, type_: str, slot_no: int) -> list[dict[str, Any]]:
        return [m for m in self.seen[Channel.EVENTS] if m["type"] == type_ and m.get("slot_no") == slot_no]


@pytest.fixture
def sim_settings(mqtt_url: str) -> Settings:
    """Just a broker and a topic prefix of the test's own: the cabinet needs nothing else."""
    return Settings().updated(mqtt={"url": mqtt_url, "topic_prefix": f"swapflow-test-{uuid.uuid4().hex[:10]}/v1"})


@asynccontextmanager
async def running(cabinet: SimulatedCabinet) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(cabinet.run())
    try:
        await asyncio.wait_for(cabinet.ready.wait(), 10)
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
async def cabinet(sim_settings: Settings) -> AsyncIterator[SimulatedCabinet]:
    """Slot 1: a full pack, slot 2: a half-charged one, slot 3: empty. Fast telemetry."""
    cab = SimulatedCabinet(
        sim_settings,
        CABINET,
        {1: SimBattery("BAT-T1", soc=100.0), 2: SimBattery("BAT-T2", soc=40.0), 3: None},
        telemetry_interval_s=0.3,
        charge_speedup=600.0,
        physics_interval_s=0.05,
    )
    async with running(cab):
        yield cab


@pytest.fixture
async def wire(sim_settings: Settings, cabinet: SimulatedCabinet) -> AsyncIterator[Wire]:
    async with Wire.open(sim_settings, cabinet.cabinet_id) as w:
        yield w


async def test_open_door_command_is_acked_and_emits_door_opened(cabinet: SimulatedCabinet, wire: Wire) -> None:
    command_id = await wire.command(CommandAction.OPEN_DOOR, 3)
    ack = await wire.ack(command_id)
    event = await wire.expect(Channel.EVENTS, lambda m: m["type"] == "door_opened")
    assert ack["ok"] is True and ack["cabinet_id"] == CABINET
    assert event["slot_no"] == 3 and event["event_id"]
    assert cabinet.door_open(3)


async def test_read_bms_acks_with_the_packs_reading_or_an_error_for_an_empty_slot(wire: Wire) -> None:
    full, empty = await wire.command(CommandAction.READ_BMS, 1), await wire.command(CommandAction.READ_BMS, 3)
    ack = await wire.ack(full)
    assert ack["ok"] is True
    assert ack["result"]["serial"] == "BAT-T1" and ack["result"]["soc"] == 100.0
    assert (await wire.ack(empty)) | {"ts": None} == {
        "v": 1,
        "command_id": empty,
        "cabinet_id": CABINET,
        "ok": False,
        "error": "slot_empty",
        "ts": None,
    }


async def test_insert_and_take_emit_battery_and_door_events(cabinet: SimulatedCabinet, wire: Wire) -> None:
    flat = SimBattery("BAT-RIDER", soc=12.0)
    with pytest.raises(PhysicalActionError, match="door is closed"):
        await cabinet.insert_battery(3, flat)

    await wire.ack(await wire.command(CommandAction.OPEN_DOOR, 3))
    await cabinet.insert_battery(3, flat)
    inserted = await wire.expect(Channel.EVENTS, lambda m: m["type"] == "battery_inserted")
    await wire.expect(Channel.EVENTS, lambda m: m["type"] == "door_closed" and m["slot_no"] == 3)
    assert inserted["slot_no"] == 3 and inserted["battery"]["serial"] == "BAT-RIDER"
    assert cabinet.battery_in(3) is flat and not cabinet.door_open(3)

    await wire.ack(await wire.command(CommandAction.OPEN_DOOR, 1))
    taken = await cabinet.take_battery(1)
    removed = await wire.expect(Channel.EVENTS, lambda m: m["type"] == "battery_removed")
    await wire.expect(Channel.EVENTS, lambda m: m["type"] == "door_closed" and m["slot_no"] == 1)
    assert taken.serial == "BAT-T1" and removed["battery_serial"] == "BAT-T1" and removed["slot_no"] == 1
    assert cabinet.battery_in(1) is None
    event_ids = [m["event_id"] for m in wire.seen[Channel.EVENTS]]
    assert len(event_ids) == len(set(event_ids)) == 6  # 2 × door_opened, inserted, removed, 2 × door_closed


async def test_jammed_slot_gives_no_ack_and_stays_closed(cabinet: SimulatedCabinet, wire: Wire) -> None:
    cabinet.jammed_slots.add(3)
    jammed = await wire.command(CommandAction.OPEN_DOOR, 3)
    # Acks go out in order, so once a later command's ack is in, the jammed one's would have been too.
    await wire.ack(await wire.command(CommandAction.READ_BMS, 1))
    assert wire.acks_of(jammed) == [] and wire.events("door_opened", 3) == []
    assert not cabinet.door_open(3)


async def test_expired_command_is_ignored(cabinet: SimulatedCabinet, wire: Wire) -> None:
    expired = await wire.command(CommandAction.OPEN_DOOR, 3, deadline_s=-1)
    await wire.ack(await wire.command(CommandAction.READ_BMS, 1))
    assert cabinet.commands_received == 2
    assert wire.acks_of(expired) == [] and not cabinet.door_open(3)


async def test_repeated_command_is_acted_on_once_and_acked_again(cabinet: SimulatedCabinet, wire: Wire) -> None:
    command_id = await wire.command(CommandAction.OPEN_DOOR, 3)
    await wire.command(CommandAction.OPEN_DOOR, 3, command_id=command_id)
    await wire.ack(await wire.command(CommandAction.READ_BMS, 1))
    assert cabinet.commands_received == 3
    acks = wire.acks_of(command_id)
    assert len(acks) == 2 and acks[0] == acks[1]  # the same ack, repeated: a resend recovers a lost ack
    assert len(wire.events("door_opened", 3)) == 1


async def test_fault_knobs_drop_acks_and_duplicate_events(cabinet: SimulatedCabinet, wire: Wire) -> None:
    cabinet.drop_acks = True
    cabinet.duplicate_events = True
    await wire.command(CommandAction.OPEN_DOOR, 3)
    await wire.expect(Channel.EVENTS, lambda m: m["type"] == "door_opened")
    await asyncio.sleep(QUIET_S)
    opened = wire.events("door_opened", 3)
    assert len(opened) == 2 and opened[0]["event_id"] == opened[1]["event_id"]
    assert wire.seen[Channel.ACKS] == [] and cabinet.door_open(3)


async def test_telemetry_has_increasing_seq_and_shows_a_pack_charging(wire: Wire) -> None:
    first = await wire.expect(Channel.TELEMETRY, lambda m: True)
    later = await wire.expect(Channel.TELEMETRY, lambda m: m["seq"] > first["seq"] + 1)
    before, after = first["slots"][1], later["slots"][1]
    assert after["charging"] is True and after["battery"]["current_a"] > 0
    assert after["battery"]["soc"] > before["battery"]["soc"]
    assert first["slots"][0]["charging"] is False  # full packs are not charged
    assert first["slots"][2] == {"v": 1, "slot_no": 3, "door": "closed", "charging": False}


async def test_birth_is_retained_and_a_clean_stop_publishes_offline(sim_settings: Settings) -> None:
    cab = SimulatedCabinet(sim_settings, CABINET, {1: SimBattery("BAT-T1", soc=100.0)})
    async with running(cab):
        async with Wire.open(sim_settings, CABINET) as late_subscriber:
            birth = await late_subscriber.expect(Channel.STATE, lambda m: True)
    assert birth["online"] is True and birth["firmware"] == "1.4.2"
    assert birth["slots"][0]["battery"]["serial"] == "BAT-T1"
    async with Wire.open(sim_settings, CABINET) as after_stop:
        state = await after_stop.expect(Channel.STATE, lambda m: True)
    assert state["online"] is False and "slots" not in state


async def test_cut_link_publishes_last_will_and_events_kept_offline_follow_the_next_birth(
    cabinet: SimulatedCabinet, wire: Wire
) -> None:
    await wire.ack(await wire.command(CommandAction.OPEN_DOOR, 3))
    cabinet.cut_network()
    await wire.expect(Channel.STATE, lambda m: m["online"] is False)
    await cabinet.insert_battery(3, SimBattery("BAT-OFFLINE", soc=20.0))  # the rider does not know
    await asyncio.sleep(QUIET_S)
    assert wire.events("battery_inserted", 3) == []

    cabinet.restore_network()
    await asyncio.wait_for(cabinet.ready.wait(), 10)
    inserted = await wire.expect(Channel.EVENTS, lambda m: m["type"] == "battery_inserted")
    assert inserted["battery"]["serial"] == "BAT-OFFLINE"
    states = [m["online"] for m in wire.seen[Channel.STATE]]
    assert states[-2:] == [False, True]


def test_pack_charges_at_constant_current_then_tapers_to_full() -> None:
    pack = SimBattery("BAT-CURVE", soc=20.0, temperature_c=25.0)
    pack.charge(600)
    assert pack.current_a == CC_CURRENT_A and pack.temperature_c > 25.0
    while pack.soc < 90:
        pack.charge(60)
    assert CV_KNEE_SOC < pack.soc and pack.current_a < CC_CURRENT_A
    volts_at_90 = pack.voltage_v
    pack.charge(4 * 3600)
    assert pack.is_full and pack.current_a == 0 and pack.reading().soc == 100.0
    assert pack.voltage_v > volts_at_90
    pack.rest(4 * 3600)
    assert pack.temperature_c == pytest.approx(25.0, abs=0.1)
    pack.discharge(3600)
    assert 40 < pack.soc < 60  # about half a pack per hour of riding


def test_a_full_charge_counts_one_cycle_and_costs_a_little_health() -> None:
    pack = SimBattery("BAT-CYCLE", soc=0.0, soh=90.0, cycle_count=7)
    pack.charge(6 * 3600)
    assert pack.is_full and pack.cycle_count == 8 and pack.soh < 90.0


async def test_fleet_is_built_from_the_database(settings: Settings, db: Database) -> None:
    cabinets = await build_cabinets(settings, db)
    async with db.sessions() as session:
        cabinet_ids = set(await session.scalars(select(Cabinet.id)))
        slots = (await session.scalars(select(Slot).where(Slot.cabinet_id == "cab-sh-001-1"))).all()
        rider_packs = dict(
            (
                await session.execute(
                    select(Battery.custodian_ref, Battery.serial).where(Battery.custodian_kind == CustodianKind.RIDER)
                )
            )
            .tuples()
            .all()
        )
    assert set(cabinets) == cabinet_ids
    assert not any(c.command_only for c in cabinets.values())  # the test seed has reporting cabinets only
    sim = cabinets["cab-sh-001-1"]
    assert {n: (b.serial if (b := sim.battery_in(n)) else None) for n in sim.slots} == {
        s.slot_no: s.battery_serial for s in slots
    }

    async with httpx.AsyncClient() as http:
        riders = await build_riders(settings, db, cabinets, http, count=5, seed=1)
    assert len(riders) == 5
    for rider in riders:
        assert rider.battery is not None and rider.battery.serial == rider_packs[rider.rider_id]
