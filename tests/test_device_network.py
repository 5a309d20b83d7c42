"""The device network at city scale, on a real broker and a real database: online state and
its causes, reconnect reconciliation, heartbeat expiry, telemetry ordering and backpressure, commands
that expire, a flood of junk, metrics, uptime and the battery API."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.request import urlopen

import aiomqtt
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from temporalio.testing import WorkflowEnvironment

from swapflow.api.app import create_app
from swapflow.db.devices import BatteryReadingRecord, CabinetHealthRecord, DeadLetter, DeviceMessage
from swapflow.db.engine import Database
from swapflow.db.network import Battery, Cabinet, CabinetPresence, Slot
from swapflow.db.ops import Alert
from swapflow.db.swaps import CustodyDiscrepancy
from swapflow.device_adapter.adapter import DeviceAdapter
from swapflow.device_adapter.ingest import CabinetReport, battery_row, write_battery_readings, write_latest_state
from swapflow.device_commands.queue import CommandQueue
from swapflow.domain.clock import as_utc
from swapflow.domain.network import DoorState, PresenceCause
from swapflow.domain.ops import OperatorRole
from swapflow.infra.metrics import histogram_quantile
from swapflow.infra.mqtt import mqtt_client
from swapflow.ops.uptime import Period, UptimeScope, cabinet_uptime, uptime
from swapflow.protocol.v1 import BatteryReading, Channel, Command, CommandAction, SlotReport
from swapflow.settings import Settings
from swapflow.simulator.battery import SimBattery
from swapflow.simulator.cabinet import SimulatedCabinet
from swapflow.simulator.fleet import build_cabinets
from tests.conftest import free_port
from tests.ops_harness import bearer, operator_token
from tests.test_device_adapter import (  # adapter is a fixture shared with those tests
    CABINET,
    READING,
    adapter,  # noqa: F401  (a fixture)
    count,
    dead_letters,
    event,
    eventually,
    running,
    slot,
    topic,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def ts(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def presence(db: Database, cabinet_id: str = CABINET) -> list[tuple[bool, str]]:
    async with db.sessions() as session:
        rows = await session.execute(
            select(CabinetPresence.online, CabinetPresence.cause)
            .where(CabinetPresence.cabinet_id == cabinet_id)
            .order_by(CabinetPresence.id)
        )
        return [(online, str(cause)) for online, cause in rows]


async def slot_packs(db: Database) -> dict[int, str | None]:
    async with db.sessions() as session:
        rows = await session.execute(select(Slot.slot_no, Slot.battery_serial).where(Slot.cabinet_id == CABINET))
        return dict(rows.tuples().all())


def telemetry(seq: int, slots: list[dict[str, Any]], *, at: datetime | None = None, cabinet_id: str = CABINET) -> bytes:
    return json.dumps(
        {
            "v": 1,
            "cabinet_id": cabinet_id,
            "ts": (at or datetime.now(UTC)).isoformat(),
            "seq": seq,
            "cabinet_temperature_c": 31.0,
            "slots": slots,
        }
    ).encode()


def birth(slots: list[dict[str, Any]], *, at: datetime | None = None) -> bytes:
    return json.dumps(
        {
            "v": 1,
            "cabinet_id": CABINET,
            "online": True,
            "ts": (at or datetime.now(UTC)).isoformat(),
            "firmware": "1.5.0",
            "slots": slots,
        }
    ).encode()


def full_slots(packs: dict[int, str | None], **reading: Any) -> list[dict[str, Any]]:
    return [
        {
            "slot_no": n,
            "door": "closed",
            "charging": serial is not None,
            **({"battery": READING | {"serial": serial} | reading} if serial else {}),
        }
        for n, serial in sorted(packs.items())
    ]


# ------------------------------------------------------------------------------------------- presence


async def test_reconnect_with_a_moved_battery_records_a_discrepancy_and_alerts(
    settings: Settings, db: Database, adapter: DeviceAdapter
) -> None:
    packs = await slot_packs(db)
    moved = packs[2]
    assert moved is not None and packs[10] is None
    # While offline, someone took the pack out of slot 2 and put it into slot 10.
    announced = packs | {2: None, 10: moved}
    await adapter.handle(topic(settings, Channel.STATE), birth(full_slots(announced)))

    async with db.sessions() as session:
        found = list(await session.scalars(select(CustodyDiscrepancy).order_by(CustodyDiscrepancy.slot_no)))
        alerts = list(await session.scalars(select(Alert).where(Alert.kind == "custody_discrepancy")))
        battery = await session.get(Battery, moved)
    assert [(d.slot_no, d.expected_serial, d.reported_serial) for d in found] == [(2, moved, None), (10, None, moved)]
    assert {a.slot_no for a in alerts} == {2, 10}
    assert (await slot(db, 2)).out_of_service == "custody discrepancy"
    assert (await slot_packs(db))[2] == moved  # custody moves only with a swap or an operator
    assert battery is not None and battery.custodian_ref == f"{CABINET}/2"


async def test_reconnect_with_the_same_packs_finds_nothing(
    settings: Settings, db: Database, adapter: DeviceAdapter
) -> None:
    await adapter.handle(topic(settings, Channel.STATE), birth(full_slots(await slot_packs(db))))
    assert await count(db, CustodyDiscrepancy) == 0
    assert await presence(db) == [(True, PresenceCause.BIRTH)]


async def test_a_last_will_is_stamped_when_it_arrives_not_when_it_was_registered(
    settings: Settings, db: Database, adapter: DeviceAdapter
) -> None:
    connected = datetime.now(UTC) - timedelta(minutes=10)  # the will is registered, with its time, at connect
    await adapter.handle(topic(settings, Channel.STATE), birth(full_slots(await slot_packs(db)), at=connected))
    will = json.dumps({"v": 1, "cabinet_id": CABINET, "online": False, "ts": connected.isoformat()}).encode()
    arrived = datetime.now(UTC)
    await adapter.handle(topic(settings, Channel.STATE), will)
    await adapter.handle(topic(settings, Channel.STATE), will)  # the retained copy, seen again
    async with db.sessions() as session:
        rows = (
            (
                await session.execute(
                    select(CabinetPresence.online, CabinetPresence.at)
                    .where(CabinetPresence.cabinet_id == CABINET)
                    .order_by(CabinetPresence.id)
                )
            )
            .tuples()
            .all()
        )
    assert [online for online, _ in rows] == [True, False]
    assert as_utc(rows[1][1]) >= arrived - timedelta(seconds=1)  # ten minutes of uptime, not zero


async def test_an_offline_state_sent_before_a_reconnect_but_heard_after_its_birth_changes_nothing(
    settings: Settings, db: Database, adapter: DeviceAdapter
) -> None:
    slots = full_slots(await slot_packs(db))
    closed = datetime.now(UTC) - timedelta(seconds=2)  # a gateway closed the old link, then the new one came up
    await adapter.handle(topic(settings, Channel.STATE), birth(slots, at=closed - timedelta(minutes=10)))
    await adapter.handle(topic(settings, Channel.STATE), birth(slots, at=closed + timedelta(seconds=1)))
    offline = {"v": 1, "cabinet_id": CABINET, "online": False, "ts": closed.isoformat(), "reason": "replaced"}
    await adapter.handle(topic(settings, Channel.STATE), json.dumps(offline).encode())
    assert await presence(db) == [(True, PresenceCause.BIRTH)]


async def test_a_birth_stamped_like_the_telemetry_heard_before_it_brings_the_cabinet_back(
    settings: Settings, db: Database, adapter: DeviceAdapter
) -> None:
    slots = full_slots(await slot_packs(db))
    connected = datetime.now(UTC) - timedelta(minutes=1)
    await adapter.handle(topic(settings, Channel.STATE), birth(slots, at=connected))
    # A gateway stamps the birth and the telemetry of one full report alike. Telemetry travels apart,
    # so it can overtake both the birth and the old link's last-will.
    report = datetime.now(UTC) - timedelta(seconds=1)
    telemetry = {"v": 1, "cabinet_id": CABINET, "ts": report.isoformat(), "seq": 1, "slots": slots}
    await adapter.handle(topic(settings, Channel.TELEMETRY), json.dumps(telemetry).encode())
    will = {"v": 1, "cabinet_id": CABINET, "online": False, "ts": connected.isoformat()}
    await adapter.handle(topic(settings, Channel.STATE), json.dumps(will).encode())
    await adapter.handle(topic(settings, Channel.STATE), birth(slots, at=report))
    assert await presence(db) == [
        (True, PresenceCause.BIRTH),
        (False, PresenceCause.LAST_WILL),
        (True, PresenceCause.BIRTH),
    ]


async def test_missed_heartbeats_take_a_cabinet_offline_and_telemetry_brings_it_back(
    settings: Settings, db: Database, temporal_env: WorkflowEnvironment
) -> None:
    fast = settings.updated(devices={"heartbeat_interval_s": 0.2, "heartbeat_missed_limit": 3})
    adapter = DeviceAdapter(fast, db, temporal_env.client, telemetry_flush_s=0.05, sweep_interval_s=0.05)
    async with running(adapter), mqtt_client(settings, f"cabinet-{uuid.uuid4().hex[:6]}") as cabinet:
        await cabinet.publish(topic(settings, Channel.STATE), birth(full_slots(await slot_packs(db))), qos=1)
        await eventually(lambda: _presence_is(db, [(True, "birth")]))
        # Silence for more than 3 × 0.2 s.
        await eventually(lambda: _presence_is(db, [(True, "birth"), (False, "heartbeat_expired")]), within_s=10)
        await cabinet.publish(topic(settings, Channel.TELEMETRY), telemetry(1, full_slots(await slot_packs(db))), qos=1)
        await eventually(lambda: _presence_is(db, [(True, "birth"), (False, "heartbeat_expired"), (True, "telemetry")]))
    async with db.sessions() as session:
        cabinet_row = await session.get(Cabinet, CABINET)
    assert cabinet_row is not None and cabinet_row.online


async def _presence_is(db: Database, expected: list[tuple[bool, str]]) -> bool:
    return await presence(db) == expected


async def test_a_restarted_adapter_does_not_expire_cabinets_it_has_not_had_time_to_hear(
    settings: Settings, db: Database, temporal_env: WorkflowEnvironment
) -> None:
    async with db.transaction() as session:
        await session.execute(
            update(Cabinet)
            .where(Cabinet.id == CABINET)
            .values(online=True, last_seen_at=datetime.now(UTC) - timedelta(hours=1))
        )
    fast = settings.updated(devices={"heartbeat_interval_s": 1.0, "heartbeat_missed_limit": 3})
    adapter = DeviceAdapter(fast, db, temporal_env.client, sweep_interval_s=60)
    async with running(adapter):
        await adapter.sweep_presence()
    assert await presence(db) == []


async def test_heartbeats_keep_a_cabinet_online(
    settings: Settings, db: Database, temporal_env: WorkflowEnvironment
) -> None:
    fast = settings.updated(devices={"heartbeat_interval_s": 0.2, "heartbeat_missed_limit": 3})
    adapter = DeviceAdapter(fast, db, temporal_env.client, telemetry_flush_s=0.05, sweep_interval_s=0.05)
    packs = await slot_packs(db)
    async with running(adapter), mqtt_client(settings, f"cabinet-{uuid.uuid4().hex[:6]}") as cabinet:
        await cabinet.publish(topic(settings, Channel.STATE), birth(full_slots(packs)), qos=1)
        for seq in range(1, 15):
            await cabinet.publish(topic(settings, Channel.TELEMETRY), telemetry(seq, full_slots(packs)), qos=1)
            await asyncio.sleep(0.1)
    assert await presence(db) == [(True, PresenceCause.BIRTH)]


async def test_clean_stop_and_lost_link_are_recorded_with_their_causes(
    settings: Settings, db: Database, adapter: DeviceAdapter
) -> None:
    [sim] = (await build_cabinets(settings, db, cabinet_ids=[CABINET], telemetry_interval_s=0.5)).values()
    async with running(adapter):
        task = asyncio.create_task(sim.run())
        await asyncio.wait_for(sim.ready.wait(), 10)
        # Its birth, or its first telemetry if that overtakes the birth (they use different connections).
        await eventually(lambda: _last_presence_is(db, (True, None)))
        sim.cut_network()
        await eventually(lambda: _last_presence_is(db, (False, "last_will")), within_s=30)
        sim.restore_network()
        await eventually(lambda: _last_presence_is(db, (True, "birth")))
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await eventually(lambda: _last_presence_is(db, (False, "clean_disconnect")))
    assert [online for online, _ in await presence(db)] == [True, False, True, False]


async def _last_presence_is(db: Database, expected: tuple[bool, str | None]) -> bool:
    found = await presence(db)
    return bool(found) and found[-1][0] == expected[0] and expected[1] in (None, found[-1][1])


# ------------------------------------------------------------------------------------------ telemetry


async def test_older_telemetry_never_overwrites_newer_state_and_duplicates_change_nothing(
    settings: Settings, db: Database, adapter: DeviceAdapter
) -> None:
    pack = (await slot_packs(db))[1]
    assert pack is not None
    now = datetime.now(UTC)
    newer = telemetry(20, full_slots({1: pack}, soc=80.0), at=now)
    await adapter.handle(topic(settings, Channel.TELEMETRY), newer)
    await adapter.handle(topic(settings, Channel.TELEMETRY), newer)  # duplicate
    await adapter.handle(
        topic(settings, Channel.TELEMETRY),
        telemetry(19, full_slots({1: pack}, soc=10.0), at=now - timedelta(seconds=10)),
    )
    # An older reading by the other path (the pack's own report) is refused by the same guard.
    async with db.transaction() as session:
        await session.execute(update(Battery).where(Battery.serial == pack).values(reading_at=now))
    await adapter.flush_history()
    async with db.sessions() as session:
        battery = await session.get(Battery, pack)
        history = list(
            await session.scalars(select(BatteryReadingRecord).where(BatteryReadingRecord.battery_serial == pack))
        )
    assert battery is not None and battery.soc == 80.0 and battery.charge_state == "idle"
    assert [(h.soc, h.slot_no) for h in history] == [(80.0, 1)]
    assert adapter.stats.stale == 2


async def test_bulk_state_writes_keep_the_newest_reading_whatever_order_they_arrive_in(db: Database) -> None:
    # The guards live in the statements (on PostgreSQL: staged by COPY, then one UPDATE ... FROM), so they
    # hold for what reaches the database in any order: other adapters, packs' own reports, a new session.
    pack = (await slot_packs(db))[1]
    assert pack is not None
    now = datetime.now(UTC)

    def report(at: datetime, soc: float, door: str) -> CabinetReport:
        reading = BatteryReading(serial=pack, soc=soc, soh=95.0, voltage_v=56.0, temperature_c=30.0, cycle_count=7)
        return CabinetReport(CABINET, at, [SlotReport(slot_no=1, door=door, charging=True, battery=reading)])

    async with db.transaction() as session:
        await write_latest_state(session, [report(now - timedelta(seconds=10), 10.0, "open")])
        # A second write in the same transaction applies its own rows, not the first one's again.
        await write_latest_state(session, [report(now, 80.0, "closed")])
    async with db.transaction() as session:
        await write_latest_state(session, [report(now - timedelta(seconds=5), 20.0, "closed")])
        older = BatteryReading(serial=pack, soc=30.0, soh=95.0, voltage_v=56.0, temperature_c=30.0, cycle_count=7)
        await write_battery_readings(session, [battery_row(older, now - timedelta(seconds=1))])
    async with db.sessions() as session:
        battery = await session.get(Battery, pack)
        cabinet = await session.get(Cabinet, CABINET)
    assert battery is not None and battery.soc == 80.0 and battery.reading_at is not None
    assert as_utc(battery.reading_at) == now
    assert cabinet is not None and cabinet.last_seen_at is not None and as_utc(cabinet.last_seen_at) == now
    assert (await slot(db, 1)).door == DoorState.CLOSED


async def test_telemetry_writes_readings_and_cabinet_health_history(
    settings: Settings, db: Database, adapter: DeviceAdapter
) -> None:
    packs = await slot_packs(db)
    base = datetime.now(UTC) - timedelta(minutes=1)
    for seq in range(3):
        await adapter.handle(
            topic(settings, Channel.TELEMETRY),
            telemetry(seq, full_slots(packs, soc=50.0 + seq, current_a=16.0), at=base + timedelta(seconds=10 * seq)),
        )
    await adapter.flush_history()
    in_packs = sum(1 for serial in packs.values() if serial)
    assert await count(db, BatteryReadingRecord) == 3 * in_packs
    assert await count(db, CabinetHealthRecord, CabinetHealthRecord.cabinet_id == CABINET) == 3
    async with db.sessions() as session:
        battery = await session.get(Battery, packs[1])
    assert battery is not None and battery.soc == 52.0 and battery.charge_state == "charging"
    assert histogram_quantile(adapter.metrics.ingest_lag, 0.5) is not None


async def test_when_ingestion_falls_behind_history_is_shed_but_state_and_events_are_not(
    settings: Settings, db: Database, temporal_env: WorkflowEnvironment
) -> None:
    small = settings.updated(devices={"telemetry_history_queue_rows": 15})
    adapter = DeviceAdapter(small, db, temporal_env.client)
    packs = await slot_packs(db)
    for seq in range(4):  # 9 readings and a health row each: only 15 rows fit
        await adapter.handle(topic(settings, Channel.TELEMETRY), telemetry(seq, full_slots(packs, soc=60.0 + seq)))
    await adapter.handle(topic(settings, Channel.EVENTS), event("door_opened", 10, event_id="during-backlog"))
    assert adapter.metrics.history_shed._value.get() == 4 * 10 - 15
    await adapter.flush_history()
    assert await count(db, BatteryReadingRecord) + await count(db, CabinetHealthRecord) == 15
    async with db.sessions() as session:
        battery = await session.get(Battery, packs[1])
    assert battery is not None and battery.soc == 63.0  # the latest state is never shed
    assert await count(db, DeviceMessage, DeviceMessage.message_id == "during-backlog") == 1
    assert (await slot(db, 10)).door == "open"


async def test_a_flood_of_malformed_messages_is_dead_lettered_and_good_traffic_still_flows(
    settings: Settings, db: Database, adapter: DeviceAdapter
) -> None:
    junk = [
        b"",
        b"{",
        b"\xff\xfe",
        b"[]",
        b'{"v": 2}',
        json.dumps({"cabinet_id": CABINET}).encode(),
        b"null",
        b'{"v": 1, "cabinet_id": "' + b"x" * 5000 + b'"}',
    ]
    channels = [Channel.EVENTS, Channel.ACKS, Channel.STATE, Channel.TELEMETRY]
    flood = [(topic(settings, channels[i % 4]), junk[i % len(junk)]) for i in range(400)]
    other = "cab-sh-002-1"
    async with (
        running(adapter),
        mqtt_client(settings, "flooding-cabinet") as cabinet,
        mqtt_client(settings, "another-cabinet") as neighbour,
    ):
        for i, (where, payload) in enumerate(flood):
            await cabinet.publish(where, payload, qos=1)
            if i == 200:
                await neighbour.publish(
                    topic(settings, Channel.EVENTS, other),
                    event("door_opened", 11, cabinet_id=other, event_id="good-1"),
                    qos=1,
                )
        await neighbour.publish(
            topic(settings, Channel.EVENTS, other), event("door_opened", 12, cabinet_id=other, event_id="good-2"), qos=1
        )
        await eventually(lambda: count(db, DeviceMessage, DeviceMessage.message_id == "good-2"), within_s=30)
        # Dead letters are written in batches.
        await eventually(lambda: _at_least(db, 400), within_s=30)
    assert await count(db, DeviceMessage, DeviceMessage.message_id.in_(["good-1", "good-2"])) == 2
    letters = await dead_letters(db)
    assert sum(letter.occurrences for letter in letters) == 400
    assert len(letters) < 100  # repeats of one fault are counted on its row, not stored again
    assert {letter.reason.split(":")[0] for letter in letters} >= {"malformed JSON", "invalid events payload"}
    labels = {s.labels["reason"] for m in adapter.metrics.dead_letters.collect() for s in m.samples}
    assert "malformed JSON" in labels


async def _at_least(db: Database, n: int) -> bool:
    """Whether at least `n` dead letters have been counted."""
    async with db.sessions() as session:
        return int(await session.scalar(select(func.sum(DeadLetter.occurrences))) or 0) >= n


async def test_adapter_serves_its_metrics_on_the_configured_port(
    settings: Settings, db: Database, temporal_env: WorkflowEnvironment
) -> None:
    port = free_port()
    adapter = DeviceAdapter(settings.updated(adapter={"metrics_port": port}), db, temporal_env.client)
    async with running(adapter):
        await adapter.handle(topic(settings, Channel.EVENTS), b"{")
        await adapter.sweep_presence()
        body = await asyncio.to_thread(lambda: urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read())
    text = body.decode()
    for name in (
        "swapflow_adapter_messages_total",
        'swapflow_adapter_dead_letters_total{reason="malformed JSON"}',
        "swapflow_adapter_ingest_lag_seconds_bucket",
        "swapflow_adapter_history_rows_shed_total",
        "swapflow_adapter_command_round_trip_seconds_bucket",
        "swapflow_adapter_commands_outstanding",
        "swapflow_adapter_cabinets_online",
    ):
        assert name in text, name


# ------------------------------------------------------------------------------------------- commands


@pytest.fixture
async def sim_cabinet(settings: Settings) -> Any:
    cab = SimulatedCabinet(settings, CABINET, {1: SimBattery("BAT-Q1", soc=100.0), 2: None}, telemetry_interval_s=60.0)
    task = asyncio.create_task(cab.run())
    await asyncio.wait_for(cab.ready.wait(), 10)
    yield cab
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
async def queue(settings: Settings) -> Any:
    q = CommandQueue(settings, name="test-queue", resend_s=0.3)
    task = asyncio.create_task(q.run())
    await asyncio.wait_for(q.publisher.connected.wait(), 10)
    yield q
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def command(action: CommandAction, slot_no: int, *, deadline_s: float, command_id: str | None = None) -> Command:
    now = datetime.now(UTC)
    return Command(
        command_id=command_id or uuid.uuid4().hex[:12],
        cabinet_id=CABINET,
        action=action,
        slot_no=slot_no,
        issued_at=now,
        deadline=now + timedelta(seconds=deadline_s),
    )


async def test_a_command_is_acked_and_its_round_trip_measured(
    queue: CommandQueue, sim_cabinet: SimulatedCabinet
) -> None:
    await queue.send(command(CommandAction.OPEN_DOOR, 2, deadline_s=5))
    await eventually(lambda: _true(queue.depth == 0))
    assert sim_cabinet.door_open(2)
    assert histogram_quantile(queue.metrics.round_trip, 0.99) is not None


async def test_an_unacknowledged_command_is_resent_then_expires_at_its_deadline(
    queue: CommandQueue, sim_cabinet: SimulatedCabinet
) -> None:
    sim_cabinet.drop_acks = True
    await queue.send(command(CommandAction.OPEN_DOOR, 2, deadline_s=1.2))
    assert queue.depth == 1
    await eventually(lambda: _true(queue.depth == 0), within_s=5)
    assert queue.metrics.expired._value.get() == 1
    assert queue.metrics.sent.labels("resend")._value.get() >= 2
    assert sim_cabinet.door_open(2)  # acted on once; only its acks were lost


async def test_a_command_past_its_deadline_is_never_sent_and_the_cabinet_refuses_a_late_one(
    settings: Settings, queue: CommandQueue, sim_cabinet: SimulatedCabinet
) -> None:
    await queue.send(command(CommandAction.OPEN_DOOR, 2, deadline_s=-1))
    assert queue.depth == 0 and queue.metrics.expired._value.get() == 1
    # A late command that reaches the cabinet anyway (a delayed delivery) is not carried out.
    late = command(CommandAction.OPEN_DOOR, 2, deadline_s=-5)
    async with mqtt_client(settings, "late-sender") as client:
        await client.publish(topic(settings, Channel.COMMANDS), late.model_dump_json(), qos=1)
        await asyncio.sleep(0.5)
    assert not sim_cabinet.door_open(2)


async def test_commands_to_one_slot_go_out_in_order_and_other_slots_are_not_held_up(
    queue: CommandQueue, sim_cabinet: SimulatedCabinet
) -> None:
    sim_cabinet.jammed_slots.add(2)
    first = command(CommandAction.OPEN_DOOR, 2, deadline_s=1.0)
    await queue.send(first)
    second = command(CommandAction.CLOSE_DOOR, 2, deadline_s=5.0)
    await queue.send(second)
    other = command(CommandAction.READ_BMS, 1, deadline_s=5.0)
    await queue.send(other)
    assert queue.metrics.sent.labels("first")._value.get() == 2  # the close waits behind the open
    await eventually(lambda: _true(queue.depth == 0), within_s=5)
    assert queue.metrics.expired._value.get() == 1 and not sim_cabinet.door_open(2)
    assert queue.metrics.sent.labels("first")._value.get() == 3  # the close went out after the open expired


async def _true(value: bool) -> bool:
    return value


# ------------------------------------------------------------------------------------- uptime and API


def test_online_seconds_counts_only_the_time_online_within_the_period() -> None:
    period = Period(ts(0), ts(100))
    transitions = [(ts(0), True), (ts(10), False), (ts(30), True), (ts(30), True), (ts(90), False)]
    assert cabinet_uptime(transitions, period)[1] == 10 + 60
    assert cabinet_uptime([(ts(0), False)], period)[1] == 0
    assert cabinet_uptime([(ts(0), True)], period)[1] == 100
    assert cabinet_uptime([(ts(-10), False), (ts(-5), True)], period)[1] == 100


async def test_uptime_per_cabinet_station_and_city_comes_from_the_recorded_transitions(db: Database) -> None:
    async with db.sessions() as session:
        cabinets = list(await session.execute(select(Cabinet.id, Cabinet.station_id).order_by(Cabinet.id)))
    (a, station_a), (b, _) = cabinets[0], cabinets[1]
    async with db.transaction() as session:
        session.add_all(
            [
                CabinetPresence(cabinet_id=a, online=True, cause=PresenceCause.BIRTH, at=ts(-100)),
                CabinetPresence(cabinet_id=a, online=False, cause=PresenceCause.HEARTBEAT_EXPIRED, at=ts(900)),
                CabinetPresence(cabinet_id=b, online=True, cause=PresenceCause.BIRTH, at=ts(500)),
            ]
        )
    period = Period(ts(0), ts(1000))
    async with db.sessions() as session:
        per_cabinet = {u.key: u for u in await uptime(session, UptimeScope.CABINET, period)}
        [station] = await uptime(session, UptimeScope.STATION, period, key=station_a)
        cities = await uptime(session, UptimeScope.CITY, period)
    assert per_cabinet[a].ratio == 0.9 and per_cabinet[b].online_s == 500
    assert station.online_s >= 900 and station.observed_s >= 1000
    assert sum(c.observed_s for c in cities) == sum(u.observed_s for u in per_cabinet.values()) == 1000 + 500


def staff_headers(database_url: str) -> dict[str, str]:
    async def headers() -> dict[str, str]:
        db = Database(database_url)
        try:
            return bearer(await operator_token(db, "op-sh", OperatorRole.OPERATOR, ["SH"]))
        finally:
            await db.dispose()

    return asyncio.run(headers())


def test_battery_api_shows_state_readiness_and_recent_history(settings: Settings, database_url: str) -> None:
    async def ingest() -> str:
        db = Database(database_url)
        try:
            async with db.sessions() as session:
                serial = await session.scalar(
                    select(Slot.battery_serial).where(Slot.cabinet_id == CABINET, Slot.slot_no == 1)
                )
            adapter = DeviceAdapter(settings, db, None)  # type: ignore[arg-type]  # no signals in this test
            for seq, soc in enumerate((70.0, 95.0)):
                await adapter.handle(
                    topic(settings, Channel.TELEMETRY),
                    telemetry(seq, full_slots({1: serial}, soc=soc, soh=92.0, current_a=3.0)),
                )
            await adapter.flush_history()
            assert serial is not None
            return serial
        finally:
            await db.dispose()

    serial = asyncio.run(ingest())
    with TestClient(create_app(settings), headers=staff_headers(database_url)) as api:
        body = api.get(f"/v1/batteries/{serial}").json()
        missing = api.get("/v1/batteries/NOPE")
    assert body["soc"] == 95.0 and body["charge_state"] == "charging" and body["ready"] is True
    assert body["slot"] == {"cabinet_id": CABINET, "slot_no": 1, "charging": True}
    assert [h["soc"] for h in body["history"]] == [95.0, 70.0]
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"


def test_battery_api_is_for_ops_of_the_city_the_pack_is_in(settings: Settings, database_url: str) -> None:
    async def setup() -> tuple[str, dict[str, str]]:
        db = Database(database_url)
        try:
            async with db.sessions() as session:
                serial = await session.scalar(
                    select(Slot.battery_serial).where(Slot.cabinet_id == CABINET, Slot.slot_no == 1)
                )
            assert serial is not None
            return serial, bearer(await operator_token(db, "op-ber", OperatorRole.OPERATOR, ["BER"]))
        finally:
            await db.dispose()

    serial, berlin = asyncio.run(setup())
    with TestClient(create_app(settings)) as api:
        assert api.get(f"/v1/batteries/{serial}").status_code == 401
        assert api.get(f"/v1/batteries/{serial}", headers=berlin).status_code == 404


def test_a_pack_below_the_ready_threshold_says_why_it_is_not_ready(settings: Settings, database_url: str) -> None:
    async def drain_pack() -> str:
        db = Database(database_url)
        try:
            async with db.transaction() as session:
                serial = await session.scalar(
                    select(Slot.battery_serial).where(Slot.cabinet_id == CABINET, Slot.slot_no == 1)
                )
                await session.execute(update(Battery).where(Battery.serial == serial).values(soc=41.0))
            assert serial is not None
            return serial
        finally:
            await db.dispose()

    serial = asyncio.run(drain_pack())
    with TestClient(create_app(settings), headers=staff_headers(database_url)) as api:
        body = api.get(f"/v1/batteries/{serial}", params={"limit": 0}).json()
    assert body["ready"] is False and body["history"] == []
    assert any("SoC 41.0% below" in reason for reason in body["not_ready_because"])


async def test_an_adapter_whose_session_is_taken_over_notices_and_takes_it_back(
    settings: Settings, db: Database, temporal_env: WorkflowEnvironment
) -> None:
    adapter = DeviceAdapter(
        settings, db, temporal_env.client, telemetry_flush_s=0.1, probe_interval_s=0.5, probe_timeout_s=1.0
    )
    async with running(adapter), mqtt_client(settings, "takeover-cabinet") as cabinet:
        # Another client under the adapter's own id (on amqtt it silently takes the session over).
        endpoint = settings.mqtt_endpoint
        async with aiomqtt.Client(
            endpoint.host,
            endpoint.port,
            identifier=adapter.client_id,
            username=endpoint.username,
            password=endpoint.password,
        ):
            await asyncio.sleep(1.0)
        # What was published while the session was elsewhere went there; new events must arrive again.
        sent = 0

        async def flowing() -> bool:
            nonlocal sent
            await cabinet.publish(
                topic(settings, Channel.EVENTS), event("door_opened", 11, event_id=f"after-{sent}"), qos=1
            )
            sent += 1
            return await count(db, DeviceMessage, DeviceMessage.message_id.like("after-%")) > 0

        await eventually(flowing, within_s=20)
