"""What the device adapter believes of a device: timestamps only within the platform's clock, pack reports
only through the cabinet that holds the pack or swaps it, and a late fact that contradicts custody is
reconciled rather than dropped. Real broker, database and Temporal test server, as in test_device_adapter."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from swapflow.activities.swap import transfer_custody
from swapflow.db.engine import Database
from swapflow.db.network import Battery, Cabinet, Slot
from swapflow.db.ops import Alert
from swapflow.db.swaps import CustodyDiscrepancy, SwapOrder
from swapflow.device_adapter.adapter import DeviceAdapter
from swapflow.device_adapter.topics import PackRoute
from swapflow.domain.clock import as_utc
from swapflow.domain.network import CustodianKind, DoorState
from swapflow.domain.swaps import SwapStatus
from swapflow.ops.invariants import Violation, check_invariants
from swapflow.protocol.v1 import Channel, battery_topic
from swapflow.settings import Settings
from tests.test_device_adapter import (  # adapter and recorder are fixtures shared with those tests
    CABINET,
    READING,
    RIDER,
    Recorder,
    adapter,  # noqa: F401
    count,
    dead_letters,
    event,
    eventually,
    recorder,  # noqa: F401
    reserve,
    slot,
    topic,
)

FAR_FUTURE = datetime(2099, 1, 1, tzinfo=UTC)


def state(online: bool, ts: datetime, **extra: Any) -> bytes:
    return json.dumps({"v": 1, "cabinet_id": CABINET, "online": online, "ts": ts.isoformat(), **extra}).encode()


def telemetry(seq: int, ts: datetime, door_of_slot_12: str = "closed") -> bytes:
    return json.dumps(
        {
            "v": 1,
            "cabinet_id": CABINET,
            "ts": ts.isoformat(),
            "seq": seq,
            "slots": [{"slot_no": 12, "door": door_of_slot_12}],
        }
    ).encode()


async def cabinet(db: Database) -> Cabinet:
    async with db.sessions() as session:
        found = await session.get(Cabinet, CABINET)
    assert found is not None
    return found


def clamped(adapter: DeviceAdapter, direction: str) -> float:
    return (
        adapter.metrics.registry.get_sample_value(
            "swapflow_adapter_device_clock_clamped_total", {"direction": direction}
        )
        or 0.0
    )


# ------------------------------------------------------------------------------------ device clocks


async def test_telemetry_stamped_far_ahead_cannot_keep_a_cabinet_online_after_its_shutdown(
    settings: Settings, db: Database, adapter: DeviceAdapter
) -> None:
    now = datetime.now(UTC)
    await adapter.handle(topic(settings, Channel.STATE), state(True, now))
    await adapter.handle(topic(settings, Channel.TELEMETRY), telemetry(1, FAR_FUTURE))
    last_seen = (await cabinet(db)).last_seen_at
    assert last_seen is not None and as_utc(last_seen) <= datetime.now(UTC)
    await adapter.handle(topic(settings, Channel.STATE), state(False, datetime.now(UTC), reason="shutdown"))
    assert not (await cabinet(db)).online
    assert clamped(adapter, "future") == 1


async def test_telemetry_from_a_clock_that_jumped_ahead_does_not_hold_back_later_telemetry(
    settings: Settings, db: Database, adapter: DeviceAdapter
) -> None:
    # Cabinets count seq from their clock in milliseconds: a jump ahead takes the seq with it.
    jumped = int(FAR_FUTURE.timestamp() * 1000)
    await adapter.handle(topic(settings, Channel.TELEMETRY), telemetry(jumped, FAR_FUTURE, door_of_slot_12="open"))
    later = datetime.now(UTC) + timedelta(seconds=1)  # its next report, from a clock set right again
    await adapter.handle(topic(settings, Channel.TELEMETRY), telemetry(int(later.timestamp() * 1000), later))
    assert (await slot(db, 12)).door == DoorState.CLOSED


async def test_a_pack_report_stamped_far_ahead_does_not_hide_its_later_readings(
    settings: Settings, db: Database, adapter: DeviceAdapter
) -> None:
    serial = (await slot(db, 2)).battery_serial
    assert serial is not None

    def report(seq: int, ts: datetime, soc: float) -> bytes:
        return json.dumps(
            {
                "v": 1,
                "serial": serial,
                "ts": ts.isoformat(),
                "seq": seq,
                "charging": True,
                "reading": READING | {"serial": serial, "soc": soc},
                "cabinet_id": CABINET,
                "slot_no": 2,
            }
        ).encode()

    await adapter.handle(battery_topic(settings.mqtt.topic_prefix, serial), report(1, FAR_FUTURE, 50.0))
    await adapter.handle(battery_topic(settings.mqtt.topic_prefix, serial), report(2, datetime.now(UTC), 51.0))
    async with db.sessions() as session:
        pack = await session.get(Battery, serial)
    assert pack is not None and pack.soc == 51.0
    assert clamped(adapter, "future") == 1


async def test_an_event_stamped_far_in_the_past_reaches_its_swap_as_received(
    settings: Settings, db: Database, adapter: DeviceAdapter, recorder: Recorder
) -> None:
    order_id = await reserve(db, 12)
    await recorder.start(order_id)
    received = datetime.now(UTC)
    door_closed = {
        "v": 1,
        "event_id": "e-1970",
        "cabinet_id": CABINET,
        "ts": "1970-01-01T00:00:00Z",
        "type": "door_closed",
        "slot_no": 12,
    }
    await adapter.handle(topic(settings, Channel.EVENTS), json.dumps(door_closed).encode())
    [signal] = await recorder.signals(order_id)
    assert signal.at >= received  # a door closing stamped 1970 is not before the pack that went in a moment ago
    assert clamped(adapter, "past") == 1


# ------------------------------------------------------------------------------------ who speaks for a pack

OTHER_CABINET = "cab-sh-002-1"


def pack_report(serial: str, seq: int, *, cabinet_id: str | None, slot_no: int | None, **reading: Any) -> bytes:
    return json.dumps(
        {
            "v": 1,
            "serial": serial,
            "ts": datetime.now(UTC).isoformat(),
            "seq": seq,
            "reading": READING | {"serial": serial, **reading},
            "charging": cabinet_id is not None,
            "cabinet_id": cabinet_id,
            "slot_no": slot_no,
        }
    ).encode()


async def swapping_slot_1(db: Database, recorder: Recorder) -> tuple[str, str]:
    """Slot 1's pack, the charged pack of a running swap (a report placing it elsewhere says it left), and
    the swap's order id."""
    serial = (await slot(db, 1)).battery_serial
    assert serial is not None
    order_id = await reserve(db, 1)
    await recorder.start(order_id)
    return serial, order_id


async def test_a_report_placing_a_swaps_pack_in_a_cabinet_that_neither_holds_nor_swaps_it_is_a_forgery(
    settings: Settings, db: Database, adapter: DeviceAdapter, recorder: Recorder
) -> None:
    serial, order_id = await swapping_slot_1(db, recorder)
    topic_ = battery_topic(settings.mqtt.topic_prefix, serial)
    await adapter.handle(topic_, pack_report(serial, 10**15, cabinet_id=OTHER_CABINET, slot_no=3, soc=1.0))

    assert await recorder.signals(order_id) == []
    [letter] = await dead_letters(db)
    assert letter.reason.startswith("forged_pack_report") and letter.topic == topic_
    assert await count(db, Alert, Alert.kind == "forged_pack_report", Alert.battery_serial == serial) == 1
    async with db.sessions() as session:
        pack = await session.get(Battery, serial)
    assert pack is not None and pack.soc != 1.0 and pack.custodian_ref == f"{CABINET}/1"
    # The forgery's seq is no watermark: the pack's own next report still counts.
    await adapter.handle(topic_, pack_report(serial, 5, cabinet_id=CABINET, slot_no=1, soc=96.0))
    assert [s.in_slot for s in await recorder.signals(order_id)] == [True]


async def test_a_forged_report_does_not_hide_the_packs_own_report_in_the_same_batch(
    settings: Settings, db: Database, adapter: DeviceAdapter, recorder: Recorder
) -> None:
    serial, order_id = await swapping_slot_1(db, recorder)
    route = PackRoute(battery_topic(settings.mqtt.topic_prefix, serial), serial)
    # Reports are applied in batches (about a second's worth); of one pack's, the newest credible one counts.
    await adapter.battery_reports.apply(
        [
            (route, pack_report(serial, 5, cabinet_id=CABINET, slot_no=1, soc=96.0)),
            (route, pack_report(serial, 6, cabinet_id=OTHER_CABINET, slot_no=3, soc=1.0)),
        ]
    )
    await eventually(lambda: recorder_heard(recorder, order_id))
    [signal] = await recorder.signals(order_id)
    assert (signal.message_id, signal.in_slot) == (f"bat:{serial}:5", True)
    await adapter.dead_letters.flush()  # as the adapter does about once a second
    [letter] = await dead_letters(db)
    assert letter.reason.startswith("forged_pack_report")


async def recorder_heard(recorder: Recorder, order_id: str) -> bool:
    return bool(await recorder.signals(order_id))


async def test_a_pack_held_by_a_rider_in_no_swap_cannot_be_reported_into_a_cabinet(
    settings: Settings, db: Database, adapter: DeviceAdapter
) -> None:
    async with db.sessions() as session:
        serial = await session.scalar(select(Battery.serial).where(Battery.custodian_ref == RIDER))
    assert serial is not None
    await adapter.handle(
        battery_topic(settings.mqtt.topic_prefix, serial), pack_report(serial, 1, cabinet_id=CABINET, slot_no=10)
    )
    [letter] = await dead_letters(db)
    assert letter.reason.startswith("forged_pack_report")
    assert adapter.metrics.registry.get_sample_value("swapflow_adapter_forged_pack_reports_total") == 1


# ------------------------------------------------------------------------------------ late facts


async def ended_swap(db: Database, *, returned: bool) -> tuple[str, str, str]:
    """A swap at CABINET that gave up and was refunded with slot 1's pack as its charged one and slot 10 as
    its return slot; with `returned`, the rider's pack went into slot 10 first. Returns (order, charged
    pack, rider's pack)."""
    order_id = uuid.uuid4().hex
    async with db.transaction() as session:
        charged = await session.scalar(select(Slot).where(Slot.cabinet_id == CABINET, Slot.slot_no == 1))
        riders = await session.scalar(
            select(Battery).where(Battery.custodian_kind == CustodianKind.RIDER, Battery.custodian_ref == RIDER)
        )
        assert charged is not None and charged.battery_serial is not None and riders is not None
        session.add(
            SwapOrder(
                id=order_id,
                rider_id=RIDER,
                cabinet_id=CABINET,
                idempotency_key=order_id,
                steps=[],
                status=SwapStatus.FAILED,
                failure_reason="charged_battery_not_taken",
                return_slot_no=10,
                charged_slot_no=1,
                issued_battery_serial=charged.battery_serial,
                finished_at=datetime.now(UTC),
            )
        )
        if returned:
            await session.execute(
                update(Slot).where(Slot.cabinet_id == CABINET, Slot.slot_no == 10).values(battery_serial=riders.serial)
            )
            await transfer_custody(
                session,
                riders,
                to_kind=CustodianKind.SLOT,
                to_ref=f"{CABINET}/10",
                reason="swap return",
                key=f"swap:{order_id}:return",
                order_id=order_id,
            )
        return order_id, charged.battery_serial, riders.serial


async def custodian(db: Database, serial: str) -> tuple[str, str]:
    async with db.sessions() as session:
        found = await session.get(Battery, serial)
    assert found is not None
    return found.custodian_kind, found.custodian_ref


async def custody_violations(db: Database) -> list[Violation]:
    return [v for v in (await check_invariants(db)).violations if v.rule.startswith("custody.")]


async def test_a_charged_pack_removed_after_its_swap_was_refunded_goes_to_the_rider_for_finance_to_review(
    settings: Settings, db: Database, adapter: DeviceAdapter
) -> None:
    order_id, charged, _ = await ended_swap(db, returned=True)
    await adapter.handle(
        topic(settings, Channel.EVENTS), event("battery_removed", 1, event_id="late-removal", battery_serial=charged)
    )

    assert await custodian(db, charged) == (CustodianKind.RIDER, RIDER)
    assert (await slot(db, 1)).battery_serial is None
    async with db.sessions() as session:
        [discrepancy] = list(await session.scalars(select(CustodyDiscrepancy)))
        [alert] = list(await session.scalars(select(Alert).where(Alert.kind == "custody_reconciled")))
    assert (discrepancy.slot_no, discrepancy.expected_serial, discrepancy.reported_serial, discrepancy.order_id) == (
        1,
        charged,
        None,
        order_id,
    )
    assert alert.order_id == order_id and alert.battery_serial == charged
    assert await custody_violations(db) == []


async def test_a_pack_removed_in_no_swap_goes_missing(settings: Settings, db: Database, adapter: DeviceAdapter) -> None:
    serial = (await slot(db, 2)).battery_serial
    assert serial is not None
    await adapter.handle(topic(settings, Channel.EVENTS), event("battery_removed", 2, battery_serial=serial))
    assert await custodian(db, serial) == (CustodianKind.MISSING, f"{CABINET}/2")
    assert await count(db, Alert, Alert.kind == "custody_reconciled") == 1
    assert await custody_violations(db) == []


async def test_a_riders_pack_put_in_after_its_swap_gave_up_is_held_in_quarantine_in_its_slot(
    settings: Settings, db: Database, adapter: DeviceAdapter
) -> None:
    order_id, _, riders = await ended_swap(db, returned=False)
    reading = READING | {"serial": riders}
    await adapter.handle(topic(settings, Channel.EVENTS), event("battery_inserted", 10, battery=reading))

    assert await custodian(db, riders) == (CustodianKind.QUARANTINE, f"{CABINET}/10")
    held = await slot(db, 10)
    assert held.battery_serial == riders and held.locked
    assert await count(db, CustodyDiscrepancy, CustodyDiscrepancy.order_id == order_id) == 1
    assert await custody_violations(db) == []


async def test_an_event_that_agrees_with_custody_changes_nothing(
    settings: Settings, db: Database, adapter: DeviceAdapter
) -> None:
    serial = (await slot(db, 3)).battery_serial
    assert serial is not None
    await adapter.handle(
        topic(settings, Channel.EVENTS), event("battery_inserted", 3, battery=READING | {"serial": serial})
    )
    assert await custodian(db, serial) == (CustodianKind.SLOT, f"{CABINET}/3")
    assert await count(db, CustodyDiscrepancy) == 0 and await count(db, Alert) == 0
