"""A device costs only itself: a flood of junk from one cabinet leaves swaps at other cabinets completing;
cabinets take turns, each within its message rate; dead letters are counted, cut and expired; the
embedded broker refuses what no device should send."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from temporalio.testing import WorkflowEnvironment

from swapflow.api.app import create_app
from swapflow.db.devices import DeadLetter, DeviceMessage
from swapflow.db.engine import Database
from swapflow.db.network import Cabinet
from swapflow.db.ops import Alert
from swapflow.db.swaps import SwapOrder
from swapflow.device_adapter.adapter import DeviceAdapter
from swapflow.device_adapter.fairness import FairQueue, RateLimiter
from swapflow.domain.swaps import SwapStage, SwapStatus
from swapflow.infra.mqtt import mqtt_client
from swapflow.ops.alert_rules import FLOOD_QUIET_S, flooding_cabinets
from swapflow.ops.alerts import DEVICE_FLOOD
from swapflow.protocol.v1 import Channel
from swapflow.services.swaps import swap_request
from swapflow.settings import Settings
from swapflow.simulator.cabinet import SimulatedCabinet
from swapflow.simulator.fleet import build_cabinets, sim_battery
from swapflow.simulator.flood import flood, junk
from swapflow.stack.broker import embedded_broker
from swapflow.workflows.swap import SwapWorkflow
from swapflow.workflows.swap_contract import swap_workflow_id
from tests.conftest import free_port
from tests.ops_harness import admin_headers
from tests.swap_harness import battery_of, new_order, running_worker
from tests.test_device_adapter import CABINET, count, eventually, running, topic
from tests.test_device_adapter import event as cabinet_event

OTHER = "cab-sh-002-1"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """A low rate, so a test reaches it quickly; swaps with short bounds (the cabinets are real)."""
    return settings.updated(
        devices={"device_rate_per_s": 5.0, "device_rate_burst": 50},
        swap={"command_ack_timeout_s": 1.5, "return_insert_timeout_s": 20.0, "charged_take_timeout_s": 20.0},
    )


@pytest.fixture
def adapter(settings: Settings, db: Database, temporal_env: WorkflowEnvironment) -> DeviceAdapter:
    return DeviceAdapter(settings, db, temporal_env.client, signal_retry_s=2.0, telemetry_flush_s=0.1)


async def letters(db: Database) -> list[DeadLetter]:
    async with db.sessions() as session:
        return list(await session.scalars(select(DeadLetter).order_by(DeadLetter.id)))


async def counted(db: Database) -> int:
    async with db.sessions() as session:
        return int(await session.scalar(select(func.sum(DeadLetter.occurrences))) or 0)


# ------------------------------------------------------------------------------------------ fairness


async def test_one_keys_backlog_never_delays_another_keys_next_item() -> None:
    queue: FairQueue[int] = FairQueue(per_key=1000)
    for i in range(1000):
        assert queue.put("noisy", i)
    assert queue.put("quiet", -1)
    served = []
    for _ in range(4):
        key, item = await queue.get()
        served.append((key, item))
        queue.done(key)
    assert served[:2] == [("noisy", 0), ("quiet", -1)]
    assert served[2:] == [("noisy", 1), ("noisy", 2)]


def test_a_keys_queue_is_bounded() -> None:
    queue: FairQueue[int] = FairQueue(per_key=3)
    assert [queue.put("a", i) for i in range(4)] == [True, True, True, False]
    assert queue.put("b", 0)


def test_a_key_gets_its_burst_then_its_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(rate_per_s=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b")
    now[0] += 1.0
    assert [limiter.allow("a") for _ in range(3)] == [True, True, False]


# ------------------------------------------------------------------------------------- dead letters


async def test_repeats_of_one_fault_are_counted_on_one_row(
    settings: Settings, db: Database, adapter: DeviceAdapter
) -> None:
    for _ in range(30):
        await adapter.handle(topic(settings, Channel.EVENTS), b"{")
    await adapter.handle(topic(settings, Channel.ACKS), b"{")
    rows = await letters(db)
    assert [(row.topic.rsplit("/", 1)[1], row.occurrences) for row in rows] == [("events", 30), ("acks", 1)]
    assert rows[0].last_seen_at is not None and rows[0].last_seen_at >= rows[0].received_at


def test_the_dead_letter_api_shows_how_often_a_fault_came(settings: Settings, database_url: str) -> None:
    async def record() -> dict[str, str]:
        db = Database(database_url)
        try:
            adapter = DeviceAdapter(settings, db, None)  # type: ignore[arg-type]  # no signals in this test
            for _ in range(3):
                await adapter.handle(topic(settings, Channel.EVENTS), b"{")
            return await admin_headers(db)
        finally:
            await db.dispose()

    headers = asyncio.run(record())
    with TestClient(create_app(settings), headers=headers) as api:
        (letter,) = api.get("/v1/dead-letters").json()
    assert letter["occurrences"] == 3 and letter["last_seen_at"] is not None


async def test_a_dead_letters_payload_is_cut_to_the_configured_size(
    settings: Settings, db: Database, temporal_env: WorkflowEnvironment
) -> None:
    adapter = DeviceAdapter(settings.updated(devices={"dead_letter_max_payload_bytes": 100}), db, temporal_env.client)
    await adapter.handle(topic(settings, Channel.EVENTS), b"{" + b"x" * 10_000)
    (row,) = await letters(db)
    assert len(row.payload) == 100


async def test_a_dead_letter_whose_payload_holds_a_nul_byte_is_kept_with_the_others(
    settings: Settings, db: Database, temporal_env: WorkflowEnvironment
) -> None:
    adapter = DeviceAdapter(settings, db, temporal_env.client)
    await adapter.handle(topic(settings, Channel.EVENTS), b"\x00junk")
    await adapter.handle(topic(settings, Channel.ACKS), b"not json")
    rows = sorted(await letters(db), key=lambda row: row.topic)
    assert [row.payload for row in rows] == ["not json", "\\x00junk"]


async def test_a_message_over_the_size_limit_is_refused_before_it_is_parsed(
    settings: Settings, db: Database, temporal_env: WorkflowEnvironment
) -> None:
    limited = settings.updated(devices={"device_max_message_bytes": 2048})  # below the broker's limit
    adapter = DeviceAdapter(limited, db, temporal_env.client, telemetry_flush_s=0.1)
    big = cabinet_event("door_opened", 11, event_id="padded", detail="x" * 4096)
    async with running(adapter), mqtt_client(settings, "big-sender") as cabinet:
        await cabinet.publish(topic(settings, Channel.EVENTS), big, qos=1)
        await eventually(lambda: _counted_at_least(db, 1))
    (row,) = await letters(db)
    assert row.reason == f"message of {len(big)} bytes exceeds the limit of 2048"
    assert await count(db, DeviceMessage, DeviceMessage.message_id == "padded") == 0


async def _counted_at_least(db: Database, n: int) -> bool:
    return await counted(db) >= n


async def test_dead_letters_past_their_retention_are_expired(
    settings: Settings, db: Database, adapter: DeviceAdapter
) -> None:
    now = datetime.now(UTC)
    async with db.transaction() as session:
        session.add_all(
            [
                DeadLetter(topic="old", payload="", reason="r", received_at=now - timedelta(days=40)),
                DeadLetter(
                    topic="old but seen lately",
                    payload="",
                    reason="r",
                    received_at=now - timedelta(days=40),
                    last_seen_at=now - timedelta(days=1),
                    dedupe_key="k1",
                    occurrences=7,
                ),
                DeadLetter(topic="recent", payload="", reason="r", received_at=now - timedelta(days=2)),
            ]
        )
    assert await adapter.dead_letters.expire() == 1
    assert sorted(row.topic for row in await letters(db)) == ["old but seen lately", "recent"]


# --------------------------------------------------------------------------------------------- rate


async def test_a_cabinet_over_its_rate_is_cut_off_counted_and_alerted_and_others_are_not(
    settings: Settings, db: Database, adapter: DeviceAdapter
) -> None:
    async with (
        running(adapter),
        mqtt_client(settings, "noisy-cabinet") as noisy,
        mqtt_client(settings, "quiet-cabinet") as quiet,
    ):
        for i in range(300):
            await noisy.publish(
                topic(settings, Channel.EVENTS), cabinet_event("door_opened", 1 + i % 9, event_id=f"noisy-{i}"), qos=1
            )
        await quiet.publish(
            topic(settings, Channel.EVENTS, OTHER),
            cabinet_event("door_opened", 11, cabinet_id=OTHER, event_id="quiet-1"),
            qos=1,
        )
        await eventually(lambda: count(db, DeviceMessage, DeviceMessage.message_id == "quiet-1"), within_s=20)
        await eventually(lambda: _counted_at_least(db, 300 - 60), within_s=20)
    accepted = await count(db, DeviceMessage, DeviceMessage.cabinet_id == CABINET)
    # Its burst (50) and the rate (5/s) over the few seconds of the test; the rest dropped.
    assert 50 <= accepted < 120
    (row,) = [row for row in await letters(db) if row.reason.startswith("rate limit")]
    assert row.occurrences == 300 - accepted
    async with db.sessions() as session:
        alerts = list(await session.scalars(select(Alert).where(Alert.kind == DEVICE_FLOOD)))
    assert [alert.cabinet_id for alert in alerts] == [CABINET]


async def test_the_flood_alert_holds_while_a_cabinet_is_over_its_rate_and_not_once_it_is_quiet(
    settings: Settings, db: Database
) -> None:
    now = datetime.now(UTC)
    async with db.transaction() as session:
        session.add(
            DeadLetter(
                topic=topic(settings, Channel.EVENTS),
                payload="",
                dedupe_key="flood",
                reason="rate limit of 5 messages/s exceeded: dropped",
                occurrences=900,
                received_at=now - timedelta(minutes=1),
                last_seen_at=now - timedelta(seconds=5),
            )
        )
    async with db.sessions() as session:
        assert [(c.kind, c.cabinet_id) for c in await flooding_cabinets(session, settings, now)] == [
            (DEVICE_FLOOD, CABINET)
        ]
        assert await flooding_cabinets(session, settings, now + timedelta(seconds=FLOOD_QUIET_S)) == []


# ------------------------------------------------------------------------------------- the network


FLOODED = "cab-sz-001-1"
VICTIMS = {"cab-sh-001-1": "rider-sh-0001", "cab-sh-002-1": "rider-sh-0002"}


@pytest.fixture
async def victims(
    temporal_env: WorkflowEnvironment, settings: Settings, db: Database, adapter: DeviceAdapter
) -> AsyncIterator[dict[str, SimulatedCabinet]]:
    cabinets = await build_cabinets(settings, db, cabinet_ids=list(VICTIMS), telemetry_interval_s=1.0)
    tasks = [asyncio.create_task(c.run()) for c in cabinets.values()]
    try:
        async with running_worker(temporal_env.client, settings, db), running(adapter):
            await asyncio.wait_for(asyncio.gather(*(c.ready.wait() for c in cabinets.values())), 10)
            with temporal_env.auto_time_skipping_disabled():
                yield cabinets
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def swap(
    env: WorkflowEnvironment, settings: Settings, db: Database, cabinet: SimulatedCabinet, rider_id: str
) -> SwapStatus:
    """One rider's swap at `cabinet`, as the rider would do it at the doors."""
    order_id = await new_order(db, rider_id, cabinet.cabinet_id)
    request = swap_request(settings, order_id=order_id, rider_id=rider_id, cabinet_id=cabinet.cabinet_id)
    handle = await env.client.start_workflow(
        SwapWorkflow.run, request, id=swap_workflow_id(order_id), task_queue=settings.temporal.task_queue
    )
    held = await battery_of(db, rider_id)
    assert held is not None
    slot_no = await _door_open(db, cabinet, order_id, SwapStage.RETURN_DOOR_OPEN, "return_slot_no")
    if slot_no is not None:
        await cabinet.insert_battery(slot_no, sim_battery(held))
        slot_no = await _door_open(db, cabinet, order_id, SwapStage.CHARGED_DOOR_OPEN, "charged_slot_no")
        if slot_no is not None:
            await cabinet.take_battery(slot_no)
    return (await handle.result()).status


async def _door_open(
    db: Database, cabinet: SimulatedCabinet, order_id: str, stage: SwapStage, slot_field: str
) -> int | None:
    """The slot whose door the swap opened at `stage`, once it is physically open; None if it failed."""
    while True:
        async with db.sessions() as session:
            order = await session.get(SwapOrder, order_id)
        assert order is not None
        if order.status != SwapStatus.IN_PROGRESS:
            return None
        slot_no = getattr(order, slot_field)
        if order.stage == stage and slot_no is not None and cabinet.door_open(slot_no):
            return int(slot_no)
        await asyncio.sleep(0.05)


async def test_a_flood_at_one_cabinet_leaves_swaps_at_other_cabinets_completing(
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    db: Database,
    adapter: DeviceAdapter,
    victims: dict[str, SimulatedCabinet],
) -> None:
    # A cabinet the platform knows, online: its junk reaches every check an honest message goes through.
    async with db.transaction() as session:
        await session.execute(update(Cabinet).where(Cabinet.id == FLOODED).values(online=True))
    messages = junk(settings.mqtt.topic_prefix, FLOODED, 20_000)
    flooding = asyncio.create_task(
        flood(
            lambda: mqtt_client(settings, f"flooder-{uuid.uuid4().hex[:6]}"), messages, rate_per_s=20_000, deadline_s=60
        )
    )
    statuses = await asyncio.gather(*(swap(temporal_env, settings, db, victims[c], r) for c, r in VICTIMS.items()))
    assert await flooding == len(messages)
    assert statuses == [SwapStatus.COMPLETED, SwapStatus.COMPLETED]
    await eventually(lambda: _counted_at_least(db, 1000), within_s=20)
    async with db.sessions() as session:
        rows = int(await session.scalar(select(func.count()).select_from(DeadLetter)) or 0)
    assert rows < 100  # the flood is counted, not stored message by message


async def test_the_embedded_broker_drops_messages_over_the_size_limit(settings: Settings) -> None:
    port = free_port()
    broker = embedded_broker("127.0.0.1", port, max_message_bytes=1024)
    await broker.start()
    try:
        local = settings.updated(mqtt={"url": f"mqtt://127.0.0.1:{port}"})
        async with mqtt_client(local, "listener") as listener, mqtt_client(local, "sender") as sender:
            await listener.subscribe("t/#", qos=1)
            await sender.publish("t/big", b"x" * 2048, qos=1)
            await sender.publish("t/small", b"x" * 100, qos=1)
            async with asyncio.timeout(5):
                message = await anext(aiter(listener.messages))
        assert message.topic.value == "t/small"
    finally:
        await broker.shutdown()
