"""Cabinets that cannot talk back (capability `command_only`): the simulated cabinet obeys commands and
says nothing, its packs report themselves on their own topics, and the device adapter turns those
reports into the evidence a swap at such a cabinet waits for. Real broker, database and Temporal
test server; a recording workflow stands in for the swap, as in test_device_adapter."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomqtt
import pytest
from sqlalchemy import select, update
from temporalio.testing import WorkflowEnvironment

from swapflow.db.devices import DeviceMessage
from swapflow.db.engine import Database
from swapflow.db.network import Battery, Cabinet, Slot
from swapflow.db.swaps import SwapOrder
from swapflow.device_adapter.adapter import DeviceAdapter
from swapflow.domain.network import CabinetCapability, CustodianKind
from swapflow.domain.swaps import SwapStage, SwapStatus
from swapflow.infra.mqtt import mqtt_client
from swapflow.protocol.v1 import Channel, Command, CommandAction, battery_topic, cabinet_topic
from swapflow.settings import Settings
from swapflow.simulator.battery import SimBattery
from swapflow.simulator.cabinet import SimulatedCabinet
from swapflow.simulator.fleet import build_cabinets, sim_battery
from swapflow.workflows.device_contract import DeviceSignal, DeviceSignalKind
from swapflow.workflows.swap import SwapWorkflow
from swapflow.workflows.swap_contract import SwapRequest, swap_workflow_id
from tests.swap_harness import new_order, running_worker
from tests.test_device_adapter import (  # adapter and recorder are fixtures shared with those tests
    CABINET,
    RIDER,
    Recorder,
    adapter,  # noqa: F401
    count,
    dead_letters,
    eventually,
    recorder,  # noqa: F401
    reserve,
    running,
    slot,
)

QUIET_S = 0.5  # how long "nothing arrives" is watched for


class Listener:
    """Everything published under some topic filters, as (topic, JSON payload) in arrival order."""

    def __init__(self, filters: list[str]) -> None:
        self.filters = filters
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self._arrived = asyncio.Event()

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings, *filters: str) -> AsyncIterator[Listener]:
        async with mqtt_client(settings, f"listener-{uuid.uuid4().hex[:8]}") as client:
            listener = cls(list(filters))
            for topic_filter in filters:
                await client.subscribe(topic_filter, qos=1)
            reader = asyncio.create_task(listener._read(client))
            try:
                yield listener
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            if not any(message.topic.matches(f) for f in self.filters):  # amqtt pushes others' retained messages
                continue
            assert isinstance(message.payload, bytes)
            self.seen.append((message.topic.value, json.loads(message.payload)))
            self._arrived.set()

    async def expect(self, match: Callable[[str, dict[str, Any]], bool], within_s: float = 5.0) -> dict[str, Any]:
        """The first payload that matches, waiting for it if need be."""
        async with asyncio.timeout(within_s):
            while True:
                for topic, payload in self.seen:
                    if match(topic, payload):
                        return payload
                self._arrived.clear()
                await self._arrived.wait()

    def reports_of(self, serial: str) -> list[dict[str, Any]]:
        return [p for t, p in self.seen if t.endswith(f"/batteries/{serial}/telemetry")]


async def send_command(settings: Settings, cabinet_id: str, action: CommandAction, slot_no: int) -> None:
    now = datetime.now(UTC)
    command = Command(
        command_id=uuid.uuid4().hex,
        cabinet_id=cabinet_id,
        action=action,
        slot_no=slot_no,
        issued_at=now,
        deadline=now + timedelta(seconds=10),
    )
    async with mqtt_client(settings, f"platform-{uuid.uuid4().hex[:8]}") as client:
        await client.publish(
            cabinet_topic(settings.mqtt.topic_prefix, cabinet_id, Channel.COMMANDS), command.model_dump_json(), qos=1
        )


async def door_opens(cabinet: SimulatedCabinet, slot_no: int) -> None:
    async with asyncio.timeout(5):
        while not cabinet.door_open(slot_no):
            await asyncio.sleep(0.02)


@asynccontextmanager
async def cabinet_running(cabinet: SimulatedCabinet) -> AsyncIterator[SimulatedCabinet]:
    task = asyncio.create_task(cabinet.run())
    try:
        await asyncio.wait_for(cabinet.ready.wait(), 10)
        yield cabinet
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
def sim_settings(mqtt_url: str) -> Settings:
    return Settings().updated(mqtt={"url": mqtt_url, "topic_prefix": f"swapflow-test-{uuid.uuid4().hex[:10]}/v1"})


def legacy_cabinet(settings: Settings, *, report_every_s: float) -> SimulatedCabinet:
    """Slot 1: a half-charged pack, slot 3: empty; command-only."""
    return SimulatedCabinet(
        settings,
        "cab-legacy-1",
        {1: SimBattery("BAT-L1", soc=50.0), 3: None},
        command_only=True,
        battery_report_interval_s=report_every_s,
        insert_report_delay_s=0.2,
        charge_speedup=600.0,
        physics_interval_s=0.05,
    )


# ------------------------------------------------------------------------------------ the simulator


async def test_command_only_cabinet_publishes_nothing_of_its_own_and_obeys_commands(sim_settings: Settings) -> None:
    prefix = sim_settings.mqtt.topic_prefix
    cabinet = legacy_cabinet(sim_settings, report_every_s=60.0)
    async with Listener.open(sim_settings, f"{prefix}/cabinets/#") as wire, cabinet_running(cabinet):
        await send_command(sim_settings, cabinet.cabinet_id, CommandAction.OPEN_DOOR, 3)
        await door_opens(cabinet, 3)
        await cabinet.insert_battery(3, SimBattery("BAT-RIDER", soc=10.0))
        await send_command(sim_settings, cabinet.cabinet_id, CommandAction.OPEN_DOOR, 1)
        await door_opens(cabinet, 1)
        await cabinet.take_battery(1)
        await asyncio.sleep(QUIET_S)
    # Only the commands: no birth, will, telemetry, events or acks, not even the goodbye of a clean stop.
    assert {topic.rsplit("/", 1)[1] for topic, _ in wire.seen} == {"commands"}
    assert cabinet.commands_received == 2


async def test_packs_in_a_command_only_cabinet_report_themselves_while_in_a_slot(sim_settings: Settings) -> None:
    cabinet = legacy_cabinet(sim_settings, report_every_s=0.2)
    async with (
        Listener.open(sim_settings, battery_topic(sim_settings.mqtt.topic_prefix, "+")) as wire,
        cabinet_running(cabinet),
    ):
        first = await wire.expect(lambda t, p: p["serial"] == "BAT-L1")
        later = await wire.expect(lambda t, p: p["serial"] == "BAT-L1" and p["seq"] > first["seq"])
    assert (first["cabinet_id"], first["slot_no"], first["charging"]) == ("cab-legacy-1", 1, True)
    assert first["reading"]["serial"] == "BAT-L1" and later["reading"]["soc"] > first["reading"]["soc"]


async def test_a_pack_put_in_reports_itself_in_the_slot_and_a_pack_taken_out_reports_it_left(
    sim_settings: Settings,
) -> None:
    cabinet = legacy_cabinet(sim_settings, report_every_s=30.0)  # periodic reports do not come into it
    async with (
        Listener.open(sim_settings, battery_topic(sim_settings.mqtt.topic_prefix, "+")) as wire,
        cabinet_running(cabinet),
    ):
        await send_command(sim_settings, cabinet.cabinet_id, CommandAction.OPEN_DOOR, 3)
        await door_opens(cabinet, 3)
        await cabinet.insert_battery(3, SimBattery("BAT-RIDER", soc=10.0))
        inserted = await wire.expect(lambda t, p: p["serial"] == "BAT-RIDER", within_s=1.0)

        await send_command(sim_settings, cabinet.cabinet_id, CommandAction.OPEN_DOOR, 1)
        await door_opens(cabinet, 1)
        await cabinet.take_battery(1)
        left = await wire.expect(lambda t, p: p["serial"] == "BAT-L1" and p["cabinet_id"] is None, within_s=1.0)
        await asyncio.sleep(QUIET_S)
    assert (inserted["cabinet_id"], inserted["slot_no"], inserted["charging"]) == ("cab-legacy-1", 3, True)
    assert inserted["reading"]["soc"] >= 10.0
    assert (left["charging"], left.get("slot_no")) == (False, None)
    assert wire.reports_of("BAT-L1")[-1] == left  # out of the cabinet, the pack says no more


# ------------------------------------------------------------------------------------ the adapter


READING = {"soc": 18.5, "soh": 91.0, "voltage_v": 55.1, "temperature_c": 27.5, "cycle_count": 321}


def report(
    serial: str, seq: int, *, cabinet_id: str | None = CABINET, slot_no: int | None = None, **reading: Any
) -> bytes:
    return json.dumps(
        {
            "v": 1,
            "serial": serial,
            "ts": datetime.now(UTC).isoformat(),
            "seq": seq,
            "reading": {"serial": serial, **READING, **reading},
            "charging": cabinet_id is not None,
            "cabinet_id": cabinet_id,
            "slot_no": slot_no,
        }
    ).encode()


async def pack(db: Database, serial: str) -> Battery:
    async with db.sessions() as session:
        found = await session.get(Battery, serial)
    assert found is not None
    return found


async def riders_pack(db: Database) -> str:
    async with db.sessions() as session:
        serial = await session.scalar(
            select(Battery.serial).where(Battery.custodian_kind == CustodianKind.RIDER, Battery.custodian_ref == RIDER)
        )
    assert serial is not None
    return serial


async def test_report_placing_a_pack_in_a_reserved_slot_signals_the_swap_in_slot(
    settings: Settings, db: Database, adapter: DeviceAdapter, recorder: Recorder
) -> None:
    serial = await riders_pack(db)
    order_id = await reserve(db, 10)
    await recorder.start(order_id)
    topic, payload = battery_topic(settings.mqtt.topic_prefix, serial), report(serial, 7, slot_no=10)
    await adapter.handle(topic, payload)
    await adapter.handle(topic, payload)  # a redelivery: behind this adapter's watermark
    second = DeviceAdapter(settings, db, adapter.temporal)
    await second.handle(topic, payload)  # another adapter on the same broker: a recorded duplicate

    [signal] = await recorder.signals(order_id)
    assert (signal.kind, signal.message_id, signal.cabinet_id, signal.slot_no, signal.in_slot) == (
        DeviceSignalKind.BATTERY_REPORT,
        f"bat:{serial}:7",
        CABINET,
        10,
        True,
    )
    assert signal.battery_serial == serial and signal.battery is not None and signal.battery.soc == 18.5
    async with db.sessions() as session:
        message = await session.scalar(select(DeviceMessage).where(DeviceMessage.message_id == f"bat:{serial}:7"))
    assert message is not None and message.cabinet_id == CABINET and message.kind == "battery_report"
    assert message.workflow_id == swap_workflow_id(order_id)
    returned = await pack(db, serial)
    assert returned.soc == 18.5 and returned.reading_at is not None
    assert (returned.custodian_kind, returned.custodian_ref) == (CustodianKind.RIDER, RIDER)  # custody stays
    assert (await slot(db, 10)).battery_serial is None
    assert (adapter.stats.stale, second.stats.duplicates, adapter.stats.signals + second.stats.signals) == (1, 1, 1)
    assert await dead_letters(db) == []


async def test_report_that_a_pack_left_its_reserved_slot_signals_the_swap_not_in_slot(
    settings: Settings, db: Database, adapter: DeviceAdapter, recorder: Recorder
) -> None:
    serial = (await slot(db, 1)).battery_serial
    assert serial is not None
    order_id = await reserve(db, 1)
    await recorder.start(order_id)
    await adapter.handle(battery_topic(settings.mqtt.topic_prefix, serial), report(serial, 3, cabinet_id=None))

    [signal] = await recorder.signals(order_id)
    assert (signal.kind, signal.message_id, signal.cabinet_id, signal.slot_no, signal.in_slot) == (
        DeviceSignalKind.BATTERY_REPORT,
        f"bat:{serial}:3:left",
        CABINET,
        1,
        False,
    )
    assert (
        await count(db, DeviceMessage, DeviceMessage.cabinet_id == "-", DeviceMessage.message_id == f"bat:{serial}:3")
        == 1
    )
    taken = await pack(db, serial)
    assert (taken.custodian_kind, taken.custodian_ref) == (CustodianKind.SLOT, f"{CABINET}/1")
    assert (await slot(db, 1)).battery_serial == serial


async def test_report_about_an_unreserved_slot_only_updates_readings_and_stale_ones_are_dropped(
    settings: Settings, db: Database, adapter: DeviceAdapter, recorder: Recorder
) -> None:
    serial = (await slot(db, 2)).battery_serial
    assert serial is not None
    topic = battery_topic(settings.mqtt.topic_prefix, serial)
    await adapter.handle(topic, report(serial, 20, slot_no=2, soc=77.0, temperature_c=31.0))
    await adapter.handle(topic, report(serial, 19, slot_no=2, soc=11.0))  # older: dropped
    await adapter.handle(topic, report(serial, 21, cabinet_id=None, soc=78.0))  # out, but its slot is not reserved

    updated = await pack(db, serial)
    assert (updated.soc, updated.temperature_c) == (78.0, 27.5) and updated.reading_at is not None
    assert (updated.custodian_kind, updated.custodian_ref) == (CustodianKind.SLOT, f"{CABINET}/2")
    assert await count(db, DeviceMessage) == 0 and await dead_letters(db) == []
    assert (adapter.stats.signals, adapter.stats.stale) == (0, 1)


async def test_unregistered_pack_in_a_reserved_slot_reaches_the_swap_and_is_recorded(
    settings: Settings, db: Database, adapter: DeviceAdapter, recorder: Recorder
) -> None:
    order_id = await reserve(db, 11)
    await recorder.start(order_id)
    await adapter.handle(battery_topic(settings.mqtt.topic_prefix, "FAKE-0042"), report("FAKE-0042", 1, slot_no=11))
    await adapter.handle(battery_topic(settings.mqtt.topic_prefix, "FAKE-0043"), report("FAKE-0043", 1, slot_no=2))

    [signal] = await recorder.signals(order_id)
    assert (signal.battery_serial, signal.slot_no, signal.in_slot) == ("FAKE-0042", 11, True)
    recorded = await count(db, DeviceMessage, DeviceMessage.message_id.in_(["bat:FAKE-0042:1", "bat:FAKE-0043:1"]))
    assert recorded == 2 and await dead_letters(db) == []


@pytest.mark.parametrize(
    ("topic_serial", "payload", "reason"),
    [
        pytest.param("BAT0000001", b'{"serial": ', "malformed JSON", id="malformed"),
        pytest.param(
            "BAT0000001",
            json.dumps({"serial": "BAT0000001", "ts": "2025-06-01T10:00:00Z", "seq": 1, "charging": False}).encode(),
            "invalid battery telemetry payload: reading",
            id="no_reading",
        ),
        pytest.param(
            "BAT0000002",
            report("BAT0000001", 1, slot_no=1),
            "payload serial 'BAT0000001' does not match topic battery 'BAT0000002'",
            id="serial_mismatch",
        ),
        pytest.param(
            "BAT0000001",
            report("BAT0000001", 1, slot_no=1).replace(
                b'"serial": "BAT0000001", "soc"', b'"serial": "BAT0000009", "soc"'
            ),
            "reading serial 'BAT0000009' does not match battery 'BAT0000001'",
            id="reading_mismatch",
        ),
        pytest.param(
            "BAT0000001",
            report("BAT0000001", 1, slot_no=None),
            "cabinet_id and slot_no must be given together",
            id="half_a_place",
        ),
    ],
)
async def test_bad_battery_report_is_dead_lettered(
    settings: Settings, db: Database, adapter: DeviceAdapter, topic_serial: str, payload: bytes, reason: str
) -> None:
    topic = battery_topic(settings.mqtt.topic_prefix, topic_serial)
    await adapter.handle(topic, payload)
    [letter] = await dead_letters(db)
    assert reason in letter.reason and letter.topic == topic
    assert await count(db, DeviceMessage) == 0


async def test_swap_evidence_from_a_command_only_cabinet_reaches_the_swap_through_the_broker(
    settings: Settings, db: Database, adapter: DeviceAdapter, recorder: Recorder
) -> None:
    async with db.transaction() as session:
        await session.execute(
            update(Cabinet).where(Cabinet.id == CABINET).values(capability=CabinetCapability.COMMAND_ONLY)
        )
    [sim] = (await build_cabinets(settings, db, cabinet_ids=[CABINET], battery_report_interval_s=30.0)).values()
    assert sim.command_only
    sim.insert_report_delay_s = 0.1
    charged = sim.battery_in(1)
    assert charged is not None
    order_id = await reserve(db, 10)
    await reserve_more(db, order_id, 1)
    await recorder.start(order_id)

    async with running(adapter), cabinet_running(sim):
        await send_command(settings, CABINET, CommandAction.OPEN_DOOR, 10)
        await door_opens(sim, 10)
        await sim.insert_battery(10, SimBattery(await riders_pack(db), soc=12.0))
        await eventually(lambda: has_report(recorder, order_id, 10, in_slot=True))
        await send_command(settings, CABINET, CommandAction.OPEN_DOOR, 1)
        await door_opens(sim, 1)
        await sim.take_battery(1)
        await eventually(lambda: has_report(recorder, order_id, 1, in_slot=False))

    async with db.sessions() as session:
        cabinet = await session.get(Cabinet, CABINET)
    assert cabinet is not None and not cabinet.online and cabinet.last_seen_at is None  # never heard from it
    assert (await pack(db, charged.serial)).reading_at is not None
    assert await dead_letters(db) == []


async def reserve_more(db: Database, order_id: str, slot_no: int) -> None:
    """Add a slot to an order's reservation (a swap reserves a return slot and a charged one)."""
    async with db.transaction() as session:
        await session.execute(
            update(Slot).where(Slot.cabinet_id == CABINET, Slot.slot_no == slot_no).values(reserved_order_id=order_id)
        )


async def has_report(recorder: Recorder, order_id: str, slot_no: int, *, in_slot: bool) -> bool:
    signals: list[DeviceSignal] = await recorder.signals(order_id)
    return any(
        s.kind == DeviceSignalKind.BATTERY_REPORT and s.slot_no == slot_no and s.in_slot is in_slot for s in signals
    )


# ------------------------------------------------------------------------------------ a whole swap


async def test_a_swap_at_a_command_only_cabinet_is_confirmed_by_the_packs_reports(
    temporal_env: WorkflowEnvironment, settings: Settings, db: Database
) -> None:
    """The real worker and adapter: the return is confirmed when the rider's pack reports itself in the
    return slot, the issue when the charged pack reports it left; the cabinet itself says nothing."""
    async with db.transaction() as session:
        await session.execute(
            update(Cabinet).where(Cabinet.id == CABINET).values(capability=CabinetCapability.COMMAND_ONLY)
        )
    [sim] = (await build_cabinets(settings, db, cabinet_ids=[CABINET], battery_report_interval_s=30.0)).values()
    sim.insert_report_delay_s = 0.2
    held = await pack(db, await riders_pack(db))
    order_id = await new_order(db, RIDER, CABINET)
    request = SwapRequest(
        order_id=order_id,
        rider_id=RIDER,
        cabinet_id=CABINET,
        command_ack_timeout_s=2.0,
        return_insert_timeout_s=20.0,
        charged_take_timeout_s=20.0,
    )
    adapter = DeviceAdapter(settings, db, temporal_env.client)
    async with running_worker(temporal_env.client, settings, db), running(adapter), cabinet_running(sim):
        with temporal_env.auto_time_skipping_disabled():  # device waits are real: the cabinet lives in real time
            handle = await temporal_env.client.start_workflow(
                SwapWorkflow.run, request, id=swap_workflow_id(order_id), task_queue=settings.temporal.task_queue
            )
            order = await until_stage(db, order_id, SwapStage.RETURN_DOOR_OPEN)
            assert order.return_slot_no is not None and order.charged_slot_no is not None, order.failure_reason
            await door_opens(sim, order.return_slot_no)
            await sim.insert_battery(order.return_slot_no, sim_battery(held))
            order = await until_stage(db, order_id, SwapStage.CHARGED_DOOR_OPEN)
            assert order.charged_slot_no is not None, order.failure_reason
            await door_opens(sim, order.charged_slot_no)
            taken = await sim.take_battery(order.charged_slot_no)
            result = await handle.result()
    assert result.status == SwapStatus.COMPLETED, result.failure_reason
    assert taken.serial == order.issued_battery_serial
    returned, issued = await pack(db, held.serial), await pack(db, taken.serial)
    assert (returned.custodian_kind, returned.custodian_ref) == (
        CustodianKind.SLOT,
        f"{CABINET}/{order.return_slot_no}",
    )
    assert (issued.custodian_kind, issued.custodian_ref) == (CustodianKind.RIDER, RIDER)
    assert await count(db, DeviceMessage, DeviceMessage.kind == "battery_report") >= 2
    assert await dead_letters(db) == []


async def until_stage(db: Database, order_id: str, stage: SwapStage, timeout_s: float = 15.0) -> SwapOrder:
    """The order once it reaches `stage` (or has failed)."""
    async with asyncio.timeout(timeout_s):
        while True:
            async with db.sessions() as session:
                order = await session.get(SwapOrder, order_id)
            assert order is not None
            if order.stage == stage or order.status == SwapStatus.FAILED:
                return order
            await asyncio.sleep(0.05)
