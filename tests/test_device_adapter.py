"""The device adapter with a real database, a real broker and Temporal's test server: what it records,
what it dead-letters, and which workflow each device message reaches. A small recording workflow
stands in for the swap workflow, under the id a slot's reservation points to."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import workflow
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RetryConfig
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from swapflow.db.devices import DeadLetter, DeviceCommand, DeviceMessage
from swapflow.db.engine import Database
from swapflow.db.network import Battery, Cabinet, Slot
from swapflow.db.swaps import SwapOrder
from swapflow.device_adapter import telemetry as telemetry_module
from swapflow.device_adapter.adapter import DeviceAdapter
from swapflow.domain.clock import as_utc
from swapflow.domain.network import DoorState
from swapflow.infra.mqtt import mqtt_client
from swapflow.protocol.v1 import Channel, Command, CommandAction, cabinet_topic
from swapflow.settings import Settings
from swapflow.simulator.battery import SimBattery
from swapflow.simulator.fleet import build_cabinets
from swapflow.stack.broker import embedded_broker
from swapflow.workflows.device_contract import DEVICE_SIGNAL, DeviceSignal, DeviceSignalKind
from swapflow.workflows.swap_contract import swap_workflow_id
from tests.conftest import free_port, uses_postgres

CABINET = "cab-sh-001-1"  # seeded: 12 slots, packs in 1–9, 10–12 empty
RIDER = "rider-sh-0001"


@workflow.defn(name="RecordingSwap")
class RecordingWorkflow:
    """Keeps every device signal it receives, for the test to query."""

    def __init__(self) -> None:
        self._signals: list[DeviceSignal] = []

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)

    @workflow.signal(name=DEVICE_SIGNAL)
    def device_event(self, signal: DeviceSignal) -> None:
        self._signals.append(signal)

    @workflow.query
    def signals(self) -> list[DeviceSignal]:
        return self._signals


class Recorder:
    """Starts recording workflows and reads what they received."""

    def __init__(self, client: Client, task_queue: str) -> None:
        self.client = client
        self.task_queue = task_queue

    async def start(self, order_id: str) -> None:
        await self.client.start_workflow(
            RecordingWorkflow.run, id=swap_workflow_id(order_id), task_queue=self.task_queue
        )

    async def signals(self, order_id: str) -> list[DeviceSignal]:
        return await self.client.get_workflow_handle(swap_workflow_id(order_id)).query(RecordingWorkflow.signals)


@pytest.fixture
async def recorder(temporal_env: WorkflowEnvironment, settings: Settings) -> AsyncIterator[Recorder]:
    async with Worker(
        temporal_env.client,
        task_queue=settings.temporal.task_queue,
        workflows=[RecordingWorkflow],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        yield Recorder(temporal_env.client, settings.temporal.task_queue)


@pytest.fixture
def adapter(settings: Settings, db: Database, temporal_env: WorkflowEnvironment) -> DeviceAdapter:
    return DeviceAdapter(settings, db, temporal_env.client, signal_retry_s=2.0, telemetry_flush_s=0.1)


@asynccontextmanager
async def running(adapter: DeviceAdapter) -> AsyncIterator[None]:
    task = asyncio.create_task(adapter.run())
    try:
        await asyncio.wait_for(adapter.ready.wait(), 10)
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def eventually(check: Callable[[], Awaitable[object]], within_s: float = 10.0) -> None:
    """Wait until `check` holds (the adapter works on its own tasks; the database is where it shows)."""
    deadline = asyncio.get_running_loop().time() + within_s
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{check} did not hold within {within_s}s")
        await asyncio.sleep(0.05)


def topic(settings: Settings, channel: Channel, cabinet_id: str = CABINET) -> str:
    return cabinet_topic(settings.mqtt.topic_prefix, cabinet_id, channel)


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def event(
    type_: str, slot_no: int | None, *, cabinet_id: str = CABINET, event_id: str | None = None, **extra: Any
) -> bytes:
    return json.dumps(
        {
            "v": 1,
            "event_id": event_id or uuid.uuid4().hex,
            "cabinet_id": cabinet_id,
            "ts": now_iso(),
            "type": type_,
            "slot_no": slot_no,
            **extra,
        }
    ).encode()


READING = {
    "serial": "BAT0000001",
    "soc": 42.5,
    "soh": 91.0,
    "voltage_v": 57.1,
    "temperature_c": 27.5,
    "cycle_count": 321,
}


async def reserve(db: Database, slot_no: int) -> str:
    """An in-progress swap at CABINET holding a reservation on the slot; returns the order id."""
    order_id = uuid.uuid4().hex
    async with db.transaction() as session:
        session.add(SwapOrder(id=order_id, rider_id=RIDER, cabinet_id=CABINET, idempotency_key=order_id, steps=[]))
        await session.execute(
            update(Slot).where(Slot.cabinet_id == CABINET, Slot.slot_no == slot_no).values(reserved_order_id=order_id)
        )
    return order_id


async def count(db: Database, model: type, *where: Any) -> int:
    async with db.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def dead_letters(db: Database) -> list[DeadLetter]:
    async with db.sessions() as session:
        return list(await session.scalars(select(DeadLetter).order_by(DeadLetter.id)))


async def slot(db: Database, slot_no: int) -> Slot:
    async with db.sessions() as session:
        found = await session.scalar(select(Slot).where(Slot.cabinet_id == CABINET, Slot.slot_no == slot_no))
    assert found is not None
    return found


async def test_malformed_json_is_dead_lettered_and_the_adapter_keeps_serving(
    settings: Settings, db: Database, adapter: DeviceAdapter
) -> None:
    async with running(adapter), mqtt_client(settings, "test-cabinet") as cabinet:
        await cabinet.publish(topic(settings, Channel.EVENTS), b'{"v": 1, "event_id": ', qos=1)
        await cabinet.publish(topic(settings, Channel.EVENTS), event("door_opened", 10, event_id="after-junk"), qos=1)
        await eventually(lambda: count(db, DeviceMessage, DeviceMessage.message_id == "after-junk"))
        await eventually(lambda: count(db, DeadLetter))  # kept on its own path: it may land after the next message
    [letter] = await dead_letters(db)
    assert letter.topic == topic(settings, Channel.EVENTS)
    assert letter.payload == '{"v": 1, "event_id": ' and letter.reason.startswith("malformed JSON")
    assert (await slot(db, 10)).door == DoorState.OPEN
    assert adapter.stats.messages == 2 and adapter.stats.dead_letters == 1


@pytest.mark.parametrize(
    ("cabinet_in_topic", "channel", "payload", "reason"),
    [
        pytest.param(
            "cab-nowhere",
            Channel.EVENTS,
            event("door_opened", 1, cabinet_id="cab-nowhere"),
            "unknown cabinet 'cab-nowhere'",
            id="unknown_cabinet",
        ),
        pytest.param(
            CABINET,
            Channel.EVENTS,
            event("door_opened", 1, cabinet_id="cab-sh-002-1"),
            "does not match topic cabinet",
            id="cabinet_id_mismatch",
        ),
        pytest.param(CABINET, Channel.EVENTS, event("door_exploded", 1), "invalid events payload: type", id="invalid"),
        pytest.param(CABINET, Channel.EVENTS, event("door_opened", 99), "has no slot 99", id="unknown_slot"),
        pytest.param(CABINET, Channel.STATE, b"\xff\xfe not utf-8", "malformed JSON", id="not_utf8"),
        pytest.param(
            CABINET,
            Channel.ACKS,
            json.dumps({"command_id": "nope", "cabinet_id": CABINET, "ok": True, "ts": now_iso()}).encode(),
            "ack for unknown command 'nope'",
            id="unknown_command",
        ),
        pytest.param(
            CABINET,
            Channel.TELEMETRY,
            json.dumps({"cabinet_id": CABINET, "ts": now_iso()}).encode(),
            "invalid telemetry payload: seq",
            id="invalid_telemetry",
        ),
        pytest.param(CABINET, Channel.COMMANDS, b"{}", "commands flow from the platform", id="commands_topic"),
    ],
)
async def test_message_that_cannot_be_accepted_is_dead_lettered_with_its_reason(
    settings: Settings,
    db: Database,
    adapter: DeviceAdapter,
    cabinet_in_topic: str,
    channel: Channel,
    payload: bytes,
    reason: str,
) -> None:
    await adapter.handle(topic(settings, channel, cabinet_in_topic), payload)
    [letter] = await dead_letters(db)
    assert reason in letter.reason
    assert letter.payload == payload.decode("utf-8", errors="replace")
    assert await count(db, DeviceMessage) == 0


async def test_message_on_a_foreign_topic_is_dead_lettered(
    settings: Settings, db: Database, adapter: DeviceAdapter
) -> None:
    await adapter.handle(f"{settings.mqtt.topic_prefix}/cabinets/{CABINET}/events/extra", event("door_opened", 1))
    [letter] = await dead_letters(db)
    assert letter.reason.startswith("not a cabinet or battery topic")


async def test_door_event_on_a_reserved_slot_signals_the_swap_workflow(
    settings: Settings, db: Database, adapter: DeviceAdapter, recorder: Recorder
) -> None:
    order_id = await reserve(db, 10)
    await recorder.start(order_id)
    await adapter.handle(topic(settings, Channel.EVENTS), event("door_closed", 10, event_id="ev-close-10"))
    [signal] = await recorder.signals(order_id)
    assert (signal.message_id, signal.kind, signal.cabinet_id, signal.slot_no) == (
        "ev-close-10",
        DeviceSignalKind.DOOR_CLOSED,
        CABINET,
        10,
    )
    async with db.sessions() as session:
        message = await session.scalar(select(DeviceMessage).where(DeviceMessage.message_id == "ev-close-10"))
    assert message is not None and message.workflow_id == swap_workflow_id(order_id) and message.kind == "door_closed"
    assert (await slot(db, 10)).door == DoorState.CLOSED
    assert adapter.stats.signals == 1 and await dead_letters(db) == []


async def test_door_opened_on_a_reserved_slot_is_recorded_but_not_signalled(
    settings: Settings, db: Database, adapter: DeviceAdapter, recorder: Recorder
) -> None:
    order_id = await reserve(db, 10)
    await recorder.start(order_id)
    await adapter.handle(topic(settings, Channel.EVENTS), event("door_opened", 10, event_id="ev-open-10"))
    async with db.sessions() as session:
        message = await session.scalar(select(DeviceMessage).where(DeviceMessage.message_id == "ev-open-10"))
    assert message is not None and message.workflow_id == swap_workflow_id(order_id)
    assert (await slot(db, 10)).door == DoorState.OPEN
    assert adapter.stats.signals == 0 and await recorder.signals(order_id) == []


async def test_battery_event_carries_the_reading_to_the_workflow(
    settings: Settings, db: Database, adapter: DeviceAdapter, recorder: Recorder
) -> None:
    order_id = await reserve(db, 10)
    await recorder.start(order_id)
    await adapter.handle(topic(settings, Channel.EVENTS), event("battery_inserted", 10, battery=READING))
    [signal] = await recorder.signals(order_id)
    assert signal.kind == DeviceSignalKind.BATTERY_INSERTED
    assert signal.battery is not None and signal.battery.serial == "BAT0000001" and signal.battery.soc == 42.5
    assert (await slot(db, 10)).battery_serial is None  # custody moves with the workflow, not the event


async def test_duplicate_event_is_recorded_once_and_signalled_once(
    settings: Settings, db: Database, adapter: DeviceAdapter, recorder: Recorder
) -> None:
    order_id = await reserve(db, 10)
    await recorder.start(order_id)
    payload = event("door_closed", 10, event_id="ev-twice")
    await adapter.handle(topic(settings, Channel.EVENTS), payload)
    await adapter.handle(topic(settings, Channel.EVENTS), payload)
    assert await count(db, DeviceMessage, DeviceMessage.message_id == "ev-twice") == 1
    assert [s.message_id for s in await recorder.signals(order_id)] == ["ev-twice"]
    assert (adapter.stats.signals, adapter.stats.duplicates) == (1, 1)


async def test_event_on_an_unreserved_slot_updates_the_slot_and_signals_nobody(
    settings: Settings, db: Database, adapter: DeviceAdapter
) -> None:
    await adapter.handle(topic(settings, Channel.EVENTS), event("door_opened", 11, event_id="ev-free"))
    assert (await slot(db, 11)).door == DoorState.OPEN
    async with db.sessions() as session:
        message = await session.scalar(select(DeviceMessage).where(DeviceMessage.message_id == "ev-free"))
    assert message is not None and message.workflow_id is None
    assert adapter.stats.signals == 0 and await dead_letters(db) == []


async def test_event_for_a_swap_without_a_running_workflow_is_recorded_and_dead_lettered(
    settings: Settings, db: Database, adapter: DeviceAdapter, recorder: Recorder
) -> None:
    order_id = await reserve(db, 10)  # reserved, but its workflow never started (or has finished)
    await adapter.handle(topic(settings, Channel.EVENTS), event("door_closed", 10, event_id="ev-orphan"))
    [letter] = await dead_letters(db)
    assert letter.reason == f"no running workflow {swap_workflow_id(order_id)} for door_closed"
    assert '"ev-orphan"' in letter.payload
    assert await count(db, DeviceMessage, DeviceMessage.message_id == "ev-orphan") == 1


async def test_an_ack_is_recorded_on_its_command_once_and_is_not_signalled(
    settings: Settings, db: Database, adapter: DeviceAdapter, recorder: Recorder
) -> None:
    order_id = await reserve(db, 10)
    await recorder.start(order_id)
    sent = datetime.now(UTC)
    async with db.transaction() as session:
        session.add(
            DeviceCommand(
                id="cmd-1",
                cabinet_id=CABINET,
                slot_no=10,
                action="read_bms",
                workflow_id=swap_workflow_id(order_id),
                sent_at=sent,
                deadline_at=sent + timedelta(seconds=10),
            )
        )
    ack = {"v": 1, "command_id": "cmd-1", "cabinet_id": CABINET, "ok": True, "ts": now_iso(), "result": READING}
    await adapter.handle(topic(settings, Channel.ACKS), json.dumps(ack).encode())
    await adapter.handle(topic(settings, Channel.ACKS), json.dumps(ack).encode())  # a redelivery
    async with db.sessions() as session:
        command = await session.get(DeviceCommand, "cmd-1")
    assert command is not None and command.acked_at is not None and command.ok is True and command.error is None
    assert command.result is not None and command.result["serial"] == "BAT0000001"
    # The activity that sent the command hears the ack itself: the workflow gets no task for it.
    assert await recorder.signals(order_id) == []
    assert adapter.stats.duplicates == 1


async def test_an_ack_for_a_command_sent_to_another_cabinet_is_dead_lettered_and_changes_nothing(
    settings: Settings, db: Database, adapter: DeviceAdapter
) -> None:
    sent = datetime.now(UTC)
    async with db.transaction() as session:
        session.add(
            DeviceCommand(
                id="cmd-2",
                cabinet_id="cab-sh-002-1",
                slot_no=10,
                action="open_door",
                sent_at=sent,
                deadline_at=sent + timedelta(seconds=10),
            )
        )
    ack = {"v": 1, "command_id": "cmd-2", "cabinet_id": CABINET, "ok": True, "ts": now_iso()}
    await adapter.handle(topic(settings, Channel.ACKS), json.dumps(ack).encode())
    [letter] = await dead_letters(db)
    assert letter.reason == "ack for command 'cmd-2', which was sent to cab-sh-002-1"
    async with db.sessions() as session:
        command = await session.get(DeviceCommand, "cmd-2")
    assert command is not None and command.acked_at is None and command.ok is None
    assert await count(db, DeviceMessage) == 0


async def test_telemetry_updates_slots_and_readings_not_custody_and_stale_telemetry_is_dropped(
    settings: Settings, db: Database, adapter: DeviceAdapter
) -> None:
    async with db.sessions() as session:
        in_slot_1 = (await slot(db, 1)).battery_serial
        riders_pack = await session.scalar(select(Battery.serial).where(Battery.custodian_ref == RIDER))
    assert in_slot_1 is not None and riders_pack is not None

    def telemetry(seq: int, soc: float) -> bytes:
        slots = [
            {"slot_no": 1, "door": "closed", "charging": True, "battery": READING | {"serial": in_slot_1, "soc": soc}},
            {"slot_no": 12, "door": "open", "battery": READING | {"serial": riders_pack}},
            {"slot_no": 11, "door": "closed", "fault": "E42 charger"},
        ]
        return json.dumps({"v": 1, "cabinet_id": CABINET, "ts": now_iso(), "seq": seq, "slots": slots}).encode()

    await adapter.handle(topic(settings, Channel.TELEMETRY), telemetry(10, 55.5))
    await adapter.handle(topic(settings, Channel.TELEMETRY), telemetry(9, 11.0))
    async with db.sessions() as session:
        pack = await session.get(Battery, in_slot_1)
        cabinet = await session.get(Cabinet, CABINET)
    assert pack is not None and pack.soc == 55.5 and pack.cycle_count == 321 and pack.reading_at is not None
    assert cabinet is not None and cabinet.online and cabinet.last_seen_at is not None
    slot_1, slot_11, slot_12 = await slot(db, 1), await slot(db, 11), await slot(db, 12)
    assert slot_1.charging and slot_11.fault == "E42 charger"
    assert slot_12.door == DoorState.OPEN and slot_12.battery_serial is None
    assert adapter.stats.stale == 1


async def test_last_will_marks_the_cabinet_offline_and_tells_its_swaps(
    settings: Settings, db: Database, adapter: DeviceAdapter, recorder: Recorder
) -> None:
    [sim] = (await build_cabinets(settings, db, cabinet_ids=[CABINET])).values()
    sim.keepalive_s = 5

    async def online() -> bool:
        async with db.sessions() as session:
            return bool(await session.scalar(select(Cabinet.online).where(Cabinet.id == CABINET)))

    async def offline() -> bool:
        return not await online()

    sim_task = asyncio.create_task(sim.run())
    try:
        async with running(adapter):
            await eventually(online)  # the birth
            order_id = await reserve(db, 10)
            await recorder.start(order_id)
            sim.cut_network()  # no DISCONNECT: the broker publishes the last-will
            await eventually(offline)
            await eventually(lambda: _has_signal(recorder, order_id, DeviceSignalKind.CABINET_OFFLINE))
            sim.restore_network()
            await eventually(online)
            await eventually(lambda: _has_signal(recorder, order_id, DeviceSignalKind.CABINET_ONLINE))
    finally:
        sim_task.cancel()
        await asyncio.gather(sim_task, return_exceptions=True)
    kinds = [s.kind for s in await recorder.signals(order_id)]
    assert kinds == [DeviceSignalKind.CABINET_OFFLINE, DeviceSignalKind.CABINET_ONLINE]
    assert await count(db, DeviceMessage, DeviceMessage.kind == "cabinet_offline") == 1


async def _has_signal(recorder: Recorder, order_id: str, kind: DeviceSignalKind) -> bool:
    return any(s.kind == kind for s in await recorder.signals(order_id))


async def _acked(db: Database, command_id: str) -> bool:
    async with db.sessions() as session:
        command = await session.get(DeviceCommand, command_id)
        return command is not None and command.acked_at is not None


def birth(ts: datetime, door_of_slot_12: str) -> bytes:
    return json.dumps(
        {
            "v": 1,
            "cabinet_id": CABINET,
            "online": True,
            "ts": ts.isoformat(),
            "firmware": "2.0.0",
            "slots": [{"slot_no": 12, "door": door_of_slot_12}],
        }
    ).encode()


async def test_birth_marks_the_cabinet_online_and_applies_its_slots(
    settings: Settings, db: Database, adapter: DeviceAdapter
) -> None:
    await adapter.handle(topic(settings, Channel.STATE), birth(datetime.now(UTC), "open"))
    async with db.sessions() as session:
        cabinet = await session.get(Cabinet, CABINET)
    assert cabinet is not None and cabinet.online and cabinet.firmware == "2.0.0"
    assert (await slot(db, 12)).door == DoorState.OPEN


async def test_replayed_old_birth_does_not_undo_newer_telemetry(
    settings: Settings, db: Database, adapter: DeviceAdapter
) -> None:
    now = datetime.now(UTC)
    telemetry = {
        "v": 1,
        "cabinet_id": CABINET,
        "ts": now.isoformat(),
        "seq": 1,
        "slots": [{"slot_no": 12, "door": "closed"}],
    }
    await adapter.handle(topic(settings, Channel.TELEMETRY), json.dumps(telemetry).encode())
    # The broker hands a reconnecting adapter the retained birth, from when the cabinet connected.
    await adapter.handle(topic(settings, Channel.STATE), birth(now - timedelta(hours=3), "open"))
    async with db.sessions() as session:
        cabinet = await session.get(Cabinet, CABINET)
    assert cabinet is not None and cabinet.online and cabinet.last_seen_at is not None
    assert abs((as_utc(cabinet.last_seen_at) - now).total_seconds()) < 1
    assert (await slot(db, 12)).door == DoorState.CLOSED


async def test_signal_that_cannot_reach_temporal_is_retried_then_dead_lettered(
    settings: Settings, db: Database
) -> None:
    # A real client of a Temporal frontend that is down (nothing listens on the port).
    unreachable = await Client.connect(
        f"127.0.0.1:{free_port()}",
        lazy=True,
        retry_config=RetryConfig(max_retries=0),
        data_converter=pydantic_data_converter,
    )
    adapter = DeviceAdapter(settings, db, unreachable, signal_retry_s=0.5)
    order_id = await reserve(db, 10)
    await adapter.handle(topic(settings, Channel.EVENTS), event("door_closed", 10, event_id="ev-no-temporal"))
    [letter] = await dead_letters(db)
    assert letter.reason.startswith(f"could not signal {swap_workflow_id(order_id)} for door_closed within")
    assert '"ev-no-temporal"' in letter.payload
    assert await count(db, DeviceMessage, DeviceMessage.message_id == "ev-no-temporal") == 1


async def test_a_cabinets_messages_reach_the_workflow_in_the_order_it_sent_them(
    settings: Settings, db: Database, adapter: DeviceAdapter, recorder: Recorder
) -> None:
    [sim] = (await build_cabinets(settings, db, cabinet_ids=[CABINET])).values()
    order_id = await reserve(db, 10)
    await recorder.start(order_id)
    sent = datetime.now(UTC)
    command = Command(
        command_id=f"{order_id}-1",
        cabinet_id=CABINET,
        action=CommandAction.OPEN_DOOR,
        slot_no=10,
        issued_at=sent,
        deadline=sent + timedelta(seconds=10),
    )
    async with db.transaction() as session:
        session.add(
            DeviceCommand(
                id=command.command_id,
                cabinet_id=CABINET,
                slot_no=10,
                action="open_door",
                workflow_id=swap_workflow_id(order_id),
                sent_at=sent,
                deadline_at=command.deadline,
            )
        )
    sim_task = asyncio.create_task(sim.run())
    try:
        async with running(adapter), mqtt_client(settings, "test-platform") as platform:
            await asyncio.wait_for(sim.ready.wait(), 10)
            await platform.publish(topic(settings, Channel.COMMANDS), command.model_dump_json(), qos=1)
            await eventually(lambda: _acked(db, command.command_id))
            await sim.insert_battery(10, SimBattery("BAT0000001", soc=15.0))
            await eventually(lambda: _has_signal(recorder, order_id, DeviceSignalKind.DOOR_CLOSED))
    finally:
        sim_task.cancel()
        await asyncio.gather(sim_task, return_exceptions=True)
    signals = await recorder.signals(order_id)
    assert [s.kind for s in signals] == [
        DeviceSignalKind.CABINET_ONLINE,  # the birth: the seeded cabinet starts offline
        DeviceSignalKind.BATTERY_INSERTED,
        DeviceSignalKind.DOOR_CLOSED,
    ]
    assert signals[1].battery is not None and signals[1].battery.serial == "BAT0000001"


async def test_adapter_reconnects_when_the_broker_comes_back(
    settings: Settings, db: Database, temporal_env: WorkflowEnvironment
) -> None:
    # A broker of the test's own, so it can be stopped and started again on the same port.
    port = free_port()
    own = settings.updated(mqtt={"url": f"mqtt://127.0.0.1:{port}"})
    broker = embedded_broker("127.0.0.1", port)
    await broker.start()
    adapter = DeviceAdapter(own, db, temporal_env.client)
    try:
        async with running(adapter):
            await broker.shutdown()
            await eventually(lambda: _disconnected(adapter))
            broker = embedded_broker("127.0.0.1", port)
            await broker.start()
            await asyncio.wait_for(adapter.ready.wait(), 10)
            async with mqtt_client(own, "test-cabinet") as cabinet:
                await cabinet.publish(
                    topic(own, Channel.EVENTS), event("door_opened", 11, event_id="after-outage"), qos=1
                )
            await eventually(lambda: count(db, DeviceMessage, DeviceMessage.message_id == "after-outage"))
    finally:
        await broker.shutdown()


async def _disconnected(adapter: DeviceAdapter) -> bool:
    return not adapter.ready.is_set()


@pytest.mark.skipif(not uses_postgres(), reason="needs a PostgreSQL server whose connections can be ended")
async def test_without_pre_ping_an_ack_survives_the_server_ending_the_adapters_connections(
    settings: Settings, db: Database, temporal_env: WorkflowEnvironment
) -> None:
    # The adapter process runs its pool without a ping per checkout: a dropped connection costs a retry.
    adapter_db = Database(settings.effective_database_url, pre_ping=False)
    adapter = DeviceAdapter(settings, adapter_db, temporal_env.client, db_retry_s=5.0)
    sent = datetime.now(UTC)
    async with db.transaction() as session:
        for command_id in ("cmd-a", "cmd-b"):
            session.add(
                DeviceCommand(
                    id=command_id,
                    cabinet_id=CABINET,
                    slot_no=10,
                    action="open_door",
                    sent_at=sent,
                    deadline_at=sent + timedelta(seconds=10),
                )
            )
    try:
        for command_id in ("cmd-a", "cmd-b"):
            async with db.transaction() as session:  # ends the adapter's pooled connection (idle since its last use)
                await session.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'idle'"
                    )
                )
            ack = {"v": 1, "command_id": command_id, "cabinet_id": CABINET, "ok": True, "ts": now_iso()}
            await adapter.handle(topic(settings, Channel.ACKS), json.dumps(ack).encode())
            assert await _acked(db, command_id)
    finally:
        await adapter_db.dispose()
    assert await dead_letters(db) == []


async def test_a_write_cancelled_mid_statement_ends_cancelled_and_is_not_retried(
    settings: Settings, db: Database, temporal_env: WorkflowEnvironment
) -> None:
    adapter = DeviceAdapter(settings, db, temporal_env.client)
    started, attempts = asyncio.Event(), 0

    async def interrupted_write(session: AsyncSession) -> None:
        # As psycopg does when a COPY is cancelled: the connection's rollback fails, and its
        # OperationalError takes the CancelledError's place.
        nonlocal attempts
        attempts += 1
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            raise OperationalError("ROLLBACK", {}, Exception("another command is already in progress")) from None

    writing = asyncio.create_task(adapter.storage.transaction(interrupted_write))
    await started.wait()
    writing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(writing, 5)
    assert attempts == 1


@pytest.mark.skipif(not uses_postgres(), reason="SQLite serializes writers: no event lands inside a telemetry write")
async def test_a_slot_fault_an_event_sets_while_telemetry_is_written_is_cleared_by_the_next_telemetry(
    settings: Settings, db: Database, adapter: DeviceAdapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    def telemetry(seq: int) -> bytes:
        slots = [{"slot_no": 11, "door": "closed"}]
        return json.dumps({"v": 1, "cabinet_id": CABINET, "ts": now_iso(), "seq": seq, "slots": slots}).encode()

    await adapter.handle(topic(settings, Channel.TELEMETRY), telemetry(1))
    write = telemetry_module.write_latest_state

    async def fault_lands_meanwhile(session: AsyncSession, reports: Any) -> None:
        monkeypatch.setattr(telemetry_module, "write_latest_state", write)
        await adapter.handle(topic(settings, Channel.EVENTS), event("fault", 11, fault_code="over_temperature"))
        await write(session, reports)

    monkeypatch.setattr(telemetry_module, "write_latest_state", fault_lands_meanwhile)
    await adapter.handle(topic(settings, Channel.TELEMETRY), telemetry(2))  # read before the fault: none
    assert (await slot(db, 11)).fault == "over_temperature"
    await adapter.handle(topic(settings, Channel.TELEMETRY), telemetry(3))  # the fault has cleared
    assert (await slot(db, 11)).fault is None
