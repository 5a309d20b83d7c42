"""The tower-protocol gateway with real parts: a tower cabinet (simulated, or raw frames on a socket)
talks TCP to the gateway, the gateway speaks protocol v1 on a real broker, and the real device adapter
writes what it hears to a real database. The platform cannot tell the tower cabinet from a v1 one; bad
frames and dead links stay on their own connection."""

from __future__ import annotations

import asyncio
import json
import struct
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select, update
from temporalio.testing import WorkflowEnvironment

from swapflow.db.devices import DeadLetter, DeviceCommand, DeviceMessage
from swapflow.db.engine import Database, create_sync_engine
from swapflow.db.network import Cabinet, CabinetPresence, Slot
from swapflow.device_adapter.adapter import DeviceAdapter
from swapflow.domain.network import CabinetProtocol, CustodianKind, DoorState
from swapflow.domain.swaps import SwapStatus
from swapflow.gateway.framing import encode_frame
from swapflow.gateway.messages import txn_now
from swapflow.gateway.server import LoginThrottle, TowerGateway
from swapflow.gateway.signals import Signal
from swapflow.identity.credentials import provision_simulated_tower_cabinets, simulated_cabinet_login
from swapflow.infra.mqtt import mqtt_client
from swapflow.protocol.v1 import Channel, Command, CommandAction, EventType, cabinet_topic
from swapflow.services.swaps import swap_request
from swapflow.settings import Settings
from swapflow.simulator.fleet import build_cabinets, sim_battery
from swapflow.simulator.tower_cabinet import TowerCabinet
from swapflow.workflows.swap import SwapWorkflow
from swapflow.workflows.swap_contract import swap_workflow_id
from tests.conftest import free_port
from tests.swap_harness import battery_of, new_order, running_worker

CABINET = "cab-sh-001-1"  # seeded: 12 slots, packs in 1–9, 10–12 empty
OTHER = "cab-sh-002-1"
RIDER = "rider-sh-0001"
RIGHT_SECRET = "<the cabinet's own>"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """A gateway port of the test's own, and a short silence before a link counts as dead."""
    return settings.updated(
        gateway={"host": "127.0.0.1", "port": free_port(), "read_timeout_s": 1.5, "login_timeout_s": 2.0},
        swap={"command_ack_timeout_s": 3.0, "return_insert_timeout_s": 20.0, "charged_take_timeout_s": 20.0},
    )


@pytest.fixture
async def platform(settings: Settings, db: Database, temporal_env: WorkflowEnvironment) -> AsyncIterator[TowerGateway]:
    """Two tower cabinets registered with their secrets, and the gateway and the device adapter running."""
    async with db.transaction() as session:
        await session.execute(
            update(Cabinet).where(Cabinet.id.in_([CABINET, OTHER])).values(protocol=CabinetProtocol.TOWER)
        )
    engine = create_sync_engine(settings.effective_database_url)
    try:
        assert provision_simulated_tower_cabinets(engine, settings) == 2
    finally:
        engine.dispose()
    gateway = TowerGateway(settings, db)
    adapter = DeviceAdapter(settings, db, temporal_env.client, signal_retry_s=2.0, telemetry_flush_s=0.1)
    tasks = [asyncio.create_task(gateway.serve()), asyncio.create_task(adapter.run())]
    try:
        await asyncio.wait_for(gateway.ready.wait(), 10)
        await asyncio.wait_for(adapter.ready.wait(), 10)
        yield gateway
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@asynccontextmanager
async def tower_cabinet(settings: Settings, db: Database, cabinet_id: str = CABINET) -> AsyncIterator[TowerCabinet]:
    """The simulated tower cabinet, online as far as the database knows."""
    cabinet = (await build_cabinets(settings, db, cabinet_ids=[cabinet_id], telemetry_interval_s=0.5))[cabinet_id]
    assert isinstance(cabinet, TowerCabinet)
    task = asyncio.create_task(cabinet.run())
    try:
        await asyncio.wait_for(cabinet.ready.wait(), 10)
        await eventually(lambda: is_online(db, cabinet_id))
        yield cabinet
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class RawTower:
    """A hand-driven TCP connection to the gateway, for frames no well-behaved cabinet sends."""

    def __init__(self, settings: Settings, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.settings = settings
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, settings: Settings, *, from_host: str = "127.0.0.1") -> RawTower:
        return cls(
            settings,
            *await asyncio.open_connection(settings.gateway.host, settings.gateway.port, local_addr=(from_host, 0)),
        )

    @property
    def address(self) -> str:
        host, port = self.writer.get_extra_info("sockname")[:2]
        return f"{host}:{port}"

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send(self, message: dict[str, Any]) -> None:
        await self.send_raw(encode_frame(json.dumps(message).encode()))

    async def receive(self, timeout_s: float = 5.0) -> dict[str, Any] | None:
        """The next frame from the gateway, or None once it has closed the connection."""
        try:
            header = await asyncio.wait_for(self.reader.readexactly(4), timeout_s)
            (length,) = struct.unpack(">I", header)
            return dict(json.loads(await asyncio.wait_for(self.reader.readexactly(length), timeout_s)))
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    async def login(self, cabinet_id: str, secret: str | None = RIGHT_SECRET) -> dict[str, Any] | None:
        """Log in with the cabinet's own secret (by default), another, or none."""
        message = {
            "messageType": 100,
            "txnNo": txn_now(),
            "devId": cabinet_id,
            "imsi": "460001234567890",
            "hardVersion": "HW1",
            "softVersion": "2.0.1",
            "protocolVersion": "1.0",
        }
        if secret is RIGHT_SECRET:
            secret = simulated_cabinet_login(self.settings, cabinet_id).password
        if secret is not None:
            message["secret"] = secret
        await self.send(message)
        return await self.receive()

    async def full_report(self, cabinet_id: str, *, door_open: int = 0) -> dict[str, Any] | None:
        attrs = [{"id": Signal.CABINET_TEMPERATURE, "value": 31.0}]
        for door in range(1, 13):
            attrs += [
                {"id": Signal.DOOR_STATUS, "value": door_open if door == 1 else 0, "doorId": door},
                {"id": Signal.SLOT_STATUS, "value": 0, "doorId": door},
                {"id": Signal.BATTERY_SERIAL, "value": "", "doorId": door},
            ]
        await self.send({"messageType": 300, "txnNo": txn_now(), "devId": cabinet_id, "isFull": 1, "attrList": attrs})
        return await self.receive()

    async def close(self) -> None:
        self.writer.close()


async def eventually(check: Callable[[], Awaitable[object]], within_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{check} did not hold within {within_s}s")
        await asyncio.sleep(0.05)


async def is_online(db: Database, cabinet_id: str) -> bool:
    async with db.sessions() as session:
        return bool(await session.scalar(select(Cabinet.online).where(Cabinet.id == cabinet_id)))


async def is_offline(db: Database, cabinet_id: str) -> bool:
    return not await is_online(db, cabinet_id)


async def slot_row(db: Database, cabinet_id: str, slot_no: int) -> Slot:
    async with db.sessions() as session:
        row = await session.scalar(select(Slot).where(Slot.cabinet_id == cabinet_id, Slot.slot_no == slot_no))
    assert row is not None
    return row


async def dead_letter_reasons(db: Database) -> list[str]:
    async with db.sessions() as session:
        return list(await session.scalars(select(DeadLetter.reason).where(DeadLetter.topic.like("tower/%"))))


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels or None) or 0.0


async def send_command(settings: Settings, db: Database, action: CommandAction, slot_no: int) -> str:
    """Record and publish a v1 command, as the worker does; returns its id."""
    command_id = uuid.uuid4().hex[:20]
    now = datetime.now(UTC)
    deadline = now + timedelta(seconds=10)
    async with db.transaction() as session:
        session.add(
            DeviceCommand(id=command_id, cabinet_id=CABINET, slot_no=slot_no, action=action.value, deadline_at=deadline)
        )
    command = Command(
        command_id=command_id, cabinet_id=CABINET, action=action, slot_no=slot_no, issued_at=now, deadline=deadline
    )
    async with mqtt_client(settings, f"test-commands-{uuid.uuid4().hex[:8]}") as client:
        await client.publish(
            cabinet_topic(settings.mqtt.topic_prefix, CABINET, Channel.COMMANDS), command.model_dump_json(), qos=1
        )
    return command_id


async def command_row(db: Database, command_id: str) -> DeviceCommand:
    async with db.sessions() as session:
        row = await session.get(DeviceCommand, command_id)
    assert row is not None
    return row


# ------------------------------------------------------------------------------------- online state


async def test_cabinet_is_online_only_after_its_login_and_a_full_report(
    settings: Settings, db: Database, platform: TowerGateway
) -> None:
    raw = await RawTower.connect(settings)
    assert (await raw.login(CABINET) or {}).get("result") == 1
    await asyncio.sleep(0.5)
    assert not await is_online(db, CABINET), "online before its full report"
    answer = await raw.full_report(CABINET, door_open=1)
    assert answer is not None and answer["messageType"] == 301
    await eventually(lambda: is_online(db, CABINET))
    assert (await slot_row(db, CABINET, 1)).door == DoorState.OPEN
    async with db.sessions() as session:
        assert (await session.get(Cabinet, CABINET)).firmware == "2.0.1"  # type: ignore[union-attr]
    await raw.close()


async def test_login_of_a_cabinet_not_registered_for_the_tower_protocol_is_refused(
    settings: Settings, db: Database, platform: TowerGateway
) -> None:
    raw = await RawTower.connect(settings)
    answer = await raw.login("cab-sz-001-1")  # registered, but a v1 cabinet
    assert answer is not None and answer["result"] == 0
    assert await raw.receive() is None, "the connection stays open after a refused login"
    assert any("login refused" in reason for reason in await dead_letter_reasons(db))


async def test_simulated_tower_cabinet_comes_online_with_its_packs(
    settings: Settings, db: Database, platform: TowerGateway
) -> None:
    async with tower_cabinet(settings, db) as cabinet:
        await eventually(lambda: is_online(db, CABINET))
        slot = await slot_row(db, CABINET, 1)
        assert slot.battery_serial == cabinet.battery_in(1).serial  # type: ignore[union-attr]
    # Checked on the broker: the adapter may still be writing the last telemetry when the offline
    # state comes in (its telemetry batches race with state transitions; left to the adapter's work).
    await eventually(lambda: retained_state_is_offline(settings, CABINET))


async def retained_state_is_offline(settings: Settings, cabinet_id: str) -> bool:
    """Whether the broker holds the cabinet's v1 offline state as its retained state."""
    topic = cabinet_topic(settings.mqtt.topic_prefix, cabinet_id, Channel.STATE)
    async with mqtt_client(settings, f"test-state-{uuid.uuid4().hex[:8]}") as client:
        await client.subscribe(topic, qos=1)
        try:
            async with asyncio.timeout(2):
                async for message in client.messages:
                    if message.topic.value == topic:
                        return json.loads(message.payload)["online"] is False  # type: ignore[arg-type]
        except TimeoutError:
            return False
    return False


async def test_dead_link_without_a_close_takes_the_cabinet_offline(
    settings: Settings, db: Database, platform: TowerGateway
) -> None:
    raw = await RawTower.connect(settings)
    await raw.login(CABINET)
    await raw.full_report(CABINET)
    await eventually(lambda: is_online(db, CABINET))
    # Silence from here (a half-open link): the gateway gives up after gateway_read_timeout_s.
    closed = sample("swapflow_gateway_connections_closed_total", cause="read_timeout")
    await eventually(lambda: is_offline(db, CABINET), within_s=10)
    assert sample("swapflow_gateway_connections_closed_total", cause="read_timeout") == closed + 1
    assert await raw.receive() is None


async def test_a_second_login_replaces_the_first_connection_and_the_cabinet_stays_online(
    settings: Settings, db: Database, platform: TowerGateway
) -> None:
    first = await RawTower.connect(settings)
    await first.login(CABINET)
    await first.full_report(CABINET)
    await eventually(lambda: is_online(db, CABINET))
    second = await RawTower.connect(settings)
    await second.login(CABINET)
    await second.full_report(CABINET)
    assert await first.receive() is None, "the replaced connection is closed"
    # The old session's offline state went out before the new birth, so the birth is the last word.
    await eventually(lambda: _went_offline_and_back(db, CABINET))
    assert await is_online(db, CABINET)
    await second.close()


async def _went_offline_and_back(db: Database, cabinet_id: str) -> bool:
    async with db.sessions() as session:
        seen = list(
            await session.scalars(
                select(CabinetPresence.online)
                .where(CabinetPresence.cabinet_id == cabinet_id)
                .order_by(CabinetPresence.id)
            )
        )
    return False in seen and seen[-1] is True


# ------------------------------------------------------------------------------------ events, alarms


async def test_door_and_pack_changes_become_v1_events(settings: Settings, db: Database, platform: TowerGateway) -> None:
    async with tower_cabinet(settings, db) as cabinet:
        cabinet.slots[10].door_open = True  # a door opened by hand: the increment carries it
        cabinet._emit(EventType.DOOR_OPENED, 10)
        await eventually(lambda: _slot_door_is(db, 10, DoorState.OPEN))
        pack = cabinet.battery_in(1)
        assert pack is not None
        cabinet.slots[1].battery = None
        await cabinet.insert_battery(10, pack)
        await eventually(lambda: _kinds_recorded(db, {"battery_inserted", "door_opened", "door_closed"}))
        await eventually(lambda: _slot_door_is(db, 10, DoorState.CLOSED))


async def _slot_door_is(db: Database, slot_no: int, door: DoorState) -> bool:
    return (await slot_row(db, CABINET, slot_no)).door == door


async def _kinds_recorded(db: Database, kinds: set[str]) -> bool:
    async with db.sessions() as session:
        found = set(await session.scalars(select(DeviceMessage.kind).where(DeviceMessage.cabinet_id == CABINET)))
    return kinds <= found


async def test_alarm_becomes_a_fault_event_on_its_slot(
    settings: Settings, db: Database, platform: TowerGateway
) -> None:
    async with tower_cabinet(settings, db) as cabinet:
        cabinet.raise_alarm("03101001", door_id=5, battery_id=cabinet.battery_in(5).serial)  # type: ignore[union-attr]
        await eventually(lambda: _kinds_recorded(db, {"fault"}))
        await eventually(lambda: _slot_fault(db, 5, "over_temperature"))
        cabinet.raise_alarm("03101001", door_id=5, active=False)
        await eventually(lambda: _slot_fault(db, 5, None))


async def _slot_fault(db: Database, slot_no: int, fault: str | None) -> bool:
    return (await slot_row(db, CABINET, slot_no)).fault == fault


async def test_what_happened_while_the_link_was_down_arrives_as_events_after_the_next_birth(
    settings: Settings, db: Database, platform: TowerGateway
) -> None:
    async with tower_cabinet(settings, db) as cabinet:
        command_id = await send_command(settings, db, CommandAction.OPEN_DOOR, 10)
        await eventually(lambda: _acked(db, command_id))
        pack = cabinet.battery_in(1)
        assert pack is not None
        cabinet.slots[1].battery = None
        cabinet.cut_network()
        await eventually(lambda: retained_state_is_offline(settings, CABINET))
        await cabinet.insert_battery(10, pack)  # the rider goes on; the cabinet keeps its reports
        cabinet.restore_network()
        await eventually(lambda: is_online(db, CABINET))
        await eventually(lambda: _kinds_recorded(db, {"battery_inserted", "door_closed"}))
        await eventually(lambda: _slot_door_is(db, 10, DoorState.CLOSED))


# -------------------------------------------------------------------------------------------- commands


async def test_v1_door_command_goes_out_as_a_control_request_and_its_response_comes_back_as_the_ack(
    settings: Settings, db: Database, platform: TowerGateway
) -> None:
    async with tower_cabinet(settings, db) as cabinet:
        round_trips = sample("swapflow_gateway_command_round_trip_seconds_count")
        command_id = await send_command(settings, db, CommandAction.OPEN_DOOR, 10)
        await eventually(lambda: _acked(db, command_id))
        row = await command_row(db, command_id)
        assert row.ok is True and row.error is None
        assert cabinet.door_open(10)
        await eventually(lambda: _slot_door_is(db, 10, DoorState.OPEN))
        assert sample("swapflow_gateway_command_round_trip_seconds_count") == round_trips + 1
        assert sample("swapflow_gateway_frames_out_total", type="500") >= 1


async def test_refused_command_is_acked_with_its_error(
    settings: Settings, db: Database, platform: TowerGateway
) -> None:
    async with tower_cabinet(settings, db) as cabinet:
        cabinet.slots[11].locked = True
        command_id = await send_command(settings, db, CommandAction.OPEN_DOOR, 11)
        await eventually(lambda: _acked(db, command_id))
        row = await command_row(db, command_id)
        assert (row.ok, row.error) == (False, "slot_locked")


async def test_bms_read_returns_the_packs_reading(settings: Settings, db: Database, platform: TowerGateway) -> None:
    async with tower_cabinet(settings, db) as cabinet:
        command_id = await send_command(settings, db, CommandAction.READ_BMS, 2)
        await eventually(lambda: _acked(db, command_id))
        row = await command_row(db, command_id)
        assert row.ok is True and row.result is not None
        assert row.result["serial"] == cabinet.battery_in(2).serial  # type: ignore[union-attr]


async def _acked(db: Database, command_id: str) -> bool:
    return (await command_row(db, command_id)).acked_at is not None


# ------------------------------------------------------------------------------------------ bad input


BAD_FRAMES = {
    "corrupt JSON": (encode_frame(b'{"messageType": 300, "txnNo": '), "malformed JSON", True),
    "unknown message type": (
        encode_frame(json.dumps({"messageType": 777, "txnNo": 1_700_000_000_000, "devId": OTHER}).encode()),
        "unknown messageType",
        True,
    ),
    "oversized length": (struct.pack(">I", 50_000_000) + b"{}", "exceeds the maximum", False),
    "length longer than the body": (struct.pack(">I", 500) + b'{"messageType": 100}', None, False),
}


@pytest.mark.parametrize("kind", list(BAD_FRAMES))
async def test_bad_frame_is_handled_on_its_own_connection_while_another_cabinet_keeps_working(
    settings: Settings, db: Database, platform: TowerGateway, kind: str
) -> None:
    data, reason, stays_open = BAD_FRAMES[kind]
    async with tower_cabinet(settings, db) as cabinet:
        raw = await RawTower.connect(settings)
        await raw.send_raw(data)
        if reason is not None:
            await eventually(lambda: _dead_letter_with(db, reason))
        if stays_open:
            # Framing intact: the same connection goes on to log in.
            assert (await raw.login(OTHER) or {}).get("result") == 1
        else:
            assert await raw.receive(timeout_s=5) is None, "the connection should have been closed"
        # The well-behaved cabinet is untouched: still online, still obeying commands.
        command_id = await send_command(settings, db, CommandAction.OPEN_DOOR, 12)
        await eventually(lambda: _acked(db, command_id))
        assert cabinet.door_open(12) and await is_online(db, CABINET)
        await raw.close()


async def _dead_letter_with(db: Database, text: str) -> bool:
    return any(text in reason for reason in await dead_letter_reasons(db))


async def test_report_with_a_bad_signal_value_is_dead_lettered_and_changes_nothing(
    settings: Settings, db: Database, platform: TowerGateway
) -> None:
    raw = await RawTower.connect(settings)
    await raw.login(CABINET)
    await raw.full_report(CABINET)
    await eventually(lambda: is_online(db, CABINET))
    await raw.send(
        {
            "messageType": 300,
            "txnNo": txn_now(),
            "devId": CABINET,
            "isFull": 0,
            "attrList": [{"id": Signal.DOOR_STATUS, "value": 7, "doorId": 3}],
        }
    )
    answer = await raw.receive()
    assert answer is not None and (answer["messageType"], answer["result"]) == (301, 0)
    await eventually(lambda: _dead_letter_with(db, "door status"))
    await raw.close()


# --------------------------------------------------------------------------------------- a whole swap


async def test_a_swap_at_a_tower_cabinet_completes_end_to_end(
    settings: Settings, db: Database, platform: TowerGateway, temporal_env: WorkflowEnvironment
) -> None:
    async with running_worker(temporal_env.client, settings, db), tower_cabinet(settings, db) as cabinet:
        with temporal_env.auto_time_skipping_disabled():
            held = await battery_of(db, RIDER)
            assert held is not None
            order_id = await new_order(db, RIDER, CABINET)
            handle = await temporal_env.client.start_workflow(
                SwapWorkflow.run,
                swap_request(settings, order_id=order_id, rider_id=RIDER, cabinet_id=CABINET),
                id=swap_workflow_id(order_id),
                task_queue=settings.temporal.task_queue,
            )
            return_slot = await _open_door_of(cabinet, 30)
            await cabinet.insert_battery(return_slot, sim_battery(held))
            charged_slot = await _open_door_of(cabinet, 30, exclude=return_slot)
            taken = await cabinet.take_battery(charged_slot)
            result = await handle.result()
    assert result.status == SwapStatus.COMPLETED, result
    issued = await battery_of(db, RIDER)
    assert issued is not None and issued.serial == taken.serial
    assert issued.custodian_kind == CustodianKind.RIDER


async def _open_door_of(cabinet: TowerCabinet, within_s: float, exclude: int | None = None) -> int:
    """The slot whose door the swap opened."""
    deadline = asyncio.get_running_loop().time() + within_s
    while asyncio.get_running_loop().time() < deadline:
        for slot_no, slot in cabinet.slots.items():
            if slot.door_open and slot_no != exclude:
                return slot_no
        await asyncio.sleep(0.02)
    raise AssertionError("no door opened")


# ------------------------------------------------------------------------------------------ logging in


async def dead_letters_on(db: Database, topic: str) -> list[DeadLetter]:
    async with db.sessions() as session:
        return list(await session.scalars(select(DeadLetter).where(DeadLetter.topic == topic)))


@pytest.mark.parametrize("secret", ["not-the-secret", None], ids=["wrong secret", "no secret"])
async def test_login_without_the_cabinets_secret_is_refused_and_dead_lettered_with_the_peer_address(
    settings: Settings, db: Database, platform: TowerGateway, secret: str | None
) -> None:
    raw = await RawTower.connect(settings)
    answer = await raw.login(CABINET, secret)
    assert answer is not None and answer["result"] == 0
    assert await raw.receive() is None, "the connection stays open after a refused login"
    assert CABINET not in platform.sessions
    [letter] = await dead_letters_on(db, f"tower/{raw.address}")
    assert raw.address in letter.reason and CABINET in letter.reason and "login refused" in letter.reason
    assert "not-the-secret" not in letter.payload, "a guessed secret is kept out of the dead letter"


async def test_a_failed_login_leaves_the_live_session_of_the_cabinet_intact(
    settings: Settings, db: Database, platform: TowerGateway
) -> None:
    live = await RawTower.connect(settings)
    assert (await live.login(CABINET) or {}).get("result") == 1
    await live.full_report(CABINET)
    await eventually(lambda: is_online(db, CABINET))
    session = platform.sessions[CABINET]
    intruder = await RawTower.connect(settings)
    assert (await intruder.login(CABINET, "guessed") or {}).get("result") == 0
    assert await intruder.receive() is None
    # The live connection still carries the cabinet: its next report is answered, nothing went offline.
    answer = await live.full_report(CABINET)
    assert answer is not None and (answer["messageType"], answer["result"]) == (301, 1)
    assert platform.sessions[CABINET] is session
    async with db.sessions() as db_session:
        seen = list(
            await db_session.scalars(select(CabinetPresence.online).where(CabinetPresence.cabinet_id == CABINET))
        )
    assert False not in seen
    await live.close()


async def test_a_connection_gets_one_deadline_to_log_in_however_often_it_sends_a_frame(
    settings: Settings, db: Database, platform: TowerGateway
) -> None:
    platform.settings = settings.updated(gateway={"login_max_frames": 10_000})
    timeouts = sample("swapflow_gateway_connections_closed_total", cause="login_timeout")
    raw = await RawTower.connect(settings)
    closed = asyncio.create_task(raw.receive(timeout_s=60))
    # An empty frame every half second, each well within the 2 s login timeout, for at most 30 s.
    for _ in range(60):
        if closed.done():
            break
        with suppress(ConnectionError):
            await raw.send_raw(struct.pack(">I", 0))
        await asyncio.sleep(0.5)
    assert closed.done() and closed.result() is None, "still open long after the login deadline"
    assert sample("swapflow_gateway_connections_closed_total", cause="login_timeout") == timeouts + 1


JUNK = {
    "small frames": encode_frame(b"\x00junk" * 400),  # 2 KB each
    "60 KB frames": encode_frame(b"\x00junk" * 12_000),
}


@pytest.mark.parametrize("kind", list(JUNK))
async def test_junk_before_login_closes_the_connection_with_one_truncated_dead_letter(
    settings: Settings, db: Database, platform: TowerGateway, kind: str
) -> None:
    raw = await RawTower.connect(settings)
    with suppress(ConnectionError):
        for _ in range(300):
            await raw.send_raw(JUNK[kind])
    assert await raw.receive(timeout_s=30) is None, "the connection should have been closed"
    [letter] = await dead_letters_on(db, f"tower/{raw.address}")
    assert len(letter.payload.encode()) <= 4096
    # The cabinet's own connections are not affected.
    cabinet = await RawTower.connect(settings)
    assert (await cabinet.login(CABINET) or {}).get("result") == 1
    await cabinet.close()


async def test_failed_logins_from_an_address_hold_its_next_login_but_not_another_addresses(
    settings: Settings, db: Database, platform: TowerGateway
) -> None:
    platform.settings = settings.updated(gateway={"login_backoff_s": 60.0})
    platform.throttle = LoginThrottle(platform.settings)
    held = sample("swapflow_gateway_logins_total", result="held")
    guesser = await RawTower.connect(settings, from_host="127.0.0.1")
    assert (await guesser.login(CABINET, "guess") or {}).get("result") == 0
    # Even with the right secret, the same address now waits its turn (a minute after the failure) ...
    again = await RawTower.connect(settings, from_host="127.0.0.1")
    pending = asyncio.create_task(again.login(CABINET))
    await eventually(lambda: _sampled_above("swapflow_gateway_logins_total", held, result="held"))
    assert CABINET not in platform.sessions and not pending.done()
    # ... while a cabinet at another address logs in at once.
    other = await RawTower.connect(settings, from_host="127.0.0.2")
    assert (await other.login(OTHER) or {}).get("result") == 1
    pending.cancel()
    await again.close()
    await other.close()


async def _sampled_above(name: str, value: float, **labels: str) -> bool:
    return sample(name, **labels) > value


def test_login_backoff_doubles_per_failure_up_to_its_cap_and_remembers_a_bounded_number_of_addresses(
    settings: Settings,
) -> None:
    throttle = LoginThrottle(
        settings.updated(gateway={"login_backoff_s": 1.0, "login_backoff_max_s": 8.0, "login_backoff_addresses": 3})
    )
    assert throttle.reserve("10.0.0.1", now=0.0) == 0.0
    holds = [throttle.failed("10.0.0.1", now=0.0) for _ in range(5)]
    assert holds == [1.0, 2.0, 4.0, 8.0, 8.0]
    # Attempts queued at once are released one hold apart; one that would wait past the cap is refused.
    assert [throttle.reserve("10.0.0.1", now=0.0) for _ in range(2)] == [8.0, None]
    for n in range(2, 5):
        throttle.failed(f"10.0.0.{n}", now=1.0)
    assert len(throttle) == 3 and throttle.reserve("10.0.0.1", now=1.0) == 0.0, "the oldest address forgotten"
    assert throttle.reserve("10.0.0.4", now=100.0) == 0.0, "failures are forgotten after the longest hold"
