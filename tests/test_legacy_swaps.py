"""Swaps at cabinets that only receive commands (legacy): nothing is assumed from a command having
been sent; the packs' own telemetry confirms the return and the issue, and without that evidence the
swap is rolled back and an operator is asked to check the slot."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import update
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from swapflow.db.engine import Database
from swapflow.db.network import Cabinet
from swapflow.db.ops import Alert
from swapflow.domain.network import CabinetCapability, CustodianKind
from swapflow.domain.swaps import SwapStage, SwapStatus
from swapflow.infra.mqtt import mqtt_client
from swapflow.protocol.v1 import BatteryTelemetry, battery_topic
from swapflow.settings import Settings
from swapflow.simulator.battery import SimBattery
from swapflow.simulator.fleet import sim_battery
from swapflow.workflows.swap import SwapWorkflow
from tests.history_recording import HISTORIES, RecordHistory
from tests.swap_harness import battery_of, running_cabinet, running_worker
from tests.test_swap_saga import (
    CABINET,
    RIDER,
    Scene,
    assert_invariants,
    assert_refunded_once,
    battery,
    count,
    ledger_kinds,
)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.updated(
        swap={
            "command_ack_timeout_s": 1.5,
            "return_insert_timeout_s": 20.0,
            "charged_take_timeout_s": 20.0,
            "offline_grace_s": 20.0,
        }
    )


@pytest.fixture
async def legacy(temporal_env: WorkflowEnvironment, settings: Settings, db: Database) -> AsyncIterator[Scene]:
    async with db.transaction() as session:
        await session.execute(
            update(Cabinet).where(Cabinet.id == CABINET).values(capability=CabinetCapability.COMMAND_ONLY, online=False)
        )
    async with (
        running_worker(temporal_env.client, settings, db),
        running_cabinet(temporal_env.client, settings, db, CABINET) as cabinet,
    ):
        assert cabinet.command_only
        with temporal_env.auto_time_skipping_disabled():
            yield Scene(temporal_env, settings, db, cabinet)


@pytest.mark.records_history
async def test_swap_at_a_command_only_cabinet_is_confirmed_by_the_packs_own_reports(
    legacy: Scene, record_history: RecordHistory
) -> None:
    order_id, handle = await legacy.start()
    returned = await legacy.rider_pack()
    order = await legacy.insert(order_id, returned)
    taken = await legacy.take(order_id)
    result = await handle.result()
    await record_history(handle.id, "swap_command_only_completed")
    assert result.status == SwapStatus.COMPLETED, result
    assert (await battery(legacy.db, returned.serial)).custodian_ref == f"{CABINET}/{order.return_slot_no}"
    issued = await battery(legacy.db, taken.serial)
    assert (issued.custodian_kind, issued.custodian_ref) == (CustodianKind.RIDER, RIDER)
    assert await ledger_kinds(legacy.db, order_id) == ["swap_charge", "swap_revenue", "commission_accrual"]
    await assert_invariants(legacy.db)


async def test_no_evidence_of_the_return_rolls_back_and_asks_an_operator_to_check(legacy: Scene) -> None:
    order_id, handle = await legacy.start()
    held = await battery_of(legacy.db, RIDER)
    await legacy.until_stage(order_id, SwapStage.RETURN_DOOR_OPEN)
    await legacy.skip(legacy.settings.swap.return_insert_timeout_s + 1)
    result = await handle.result()
    assert (result.status, result.failure_reason) == (SwapStatus.FAILED, "return_not_confirmed")
    assert await count(legacy.db, Alert, Alert.kind == "operator_check") == 1
    assert held is not None and (await battery(legacy.db, held.serial)).custodian_ref == RIDER
    await assert_refunded_once(legacy.db, order_id, legacy.env.client)
    await assert_invariants(legacy.db)


async def test_no_evidence_the_charged_pack_left_rolls_back_and_asks_an_operator_to_check(legacy: Scene) -> None:
    order_id, handle = await legacy.start()
    returned = await legacy.rider_pack()
    await legacy.insert(order_id, returned)
    order = await legacy.until_stage(order_id, SwapStage.CHARGED_DOOR_OPEN)
    await legacy.skip(legacy.settings.swap.charged_take_timeout_s + 1)
    result = await handle.result()
    assert (result.status, result.failure_reason) == (SwapStatus.FAILED, "charged_take_not_confirmed")
    assert await count(legacy.db, Alert, Alert.kind == "operator_check") == 1
    assert order.issued_battery_serial is not None
    assert (await battery(legacy.db, order.issued_battery_serial)).custodian_kind == CustodianKind.SLOT
    await assert_refunded_once(legacy.db, order_id, legacy.env.client)
    await assert_invariants(legacy.db)


async def test_unregistered_pack_reported_in_the_return_slot_is_quarantined(legacy: Scene) -> None:
    order_id, handle = await legacy.start()
    order = await legacy.insert(order_id, SimBattery("FAKE-LEGACY-1", soc=20.0))
    result = await handle.result()
    assert (result.status, result.failure_reason) == (SwapStatus.FAILED, "returned_battery_not_registered")
    assert order.return_slot_no is not None
    assert await count(legacy.db, Alert, Alert.kind == "battery_quarantined") == 1
    await assert_refunded_once(legacy.db, order_id, legacy.env.client)
    await assert_invariants(legacy.db)


async def publish_report(settings: Settings, pack: SimBattery, *, cabinet_id: str, slot_no: int | None) -> None:
    """One report placing the pack in a slot with no current flowing, as any cabinet could send it."""
    report = BatteryTelemetry(
        serial=pack.serial,
        ts=datetime.now(UTC),
        seq=time.time_ns() // 1_000_000,
        reading=pack.reading().model_copy(update={"current_a": 0.0}),
        charging=True,
        cabinet_id=cabinet_id,
        slot_no=slot_no,
    )
    async with mqtt_client(settings, f"forger-{uuid.uuid4().hex[:8]}") as client:
        await client.publish(battery_topic(settings.mqtt.topic_prefix, pack.serial), report.model_dump_json(), qos=1)


async def test_one_report_of_the_riders_pack_without_charging_current_does_not_confirm_the_return(
    legacy: Scene,
) -> None:
    order_id, handle = await legacy.start()
    riders = await legacy.rider_pack()
    order = await legacy.until_stage(order_id, SwapStage.RETURN_DOOR_OPEN)
    await publish_report(legacy.settings, riders, cabinet_id=CABINET, slot_no=order.return_slot_no)
    await asyncio.sleep(1.0)  # the report reaches the swap (through the adapter's next batch)
    await legacy.skip(legacy.settings.swap.return_insert_timeout_s + 1)
    result = await handle.result()
    assert (result.status, result.failure_reason) == (SwapStatus.FAILED, "return_not_confirmed")
    assert (await battery(legacy.db, riders.serial)).custodian_ref == RIDER
    await assert_invariants(legacy.db)


async def test_a_report_placing_the_charged_pack_in_another_cabinet_does_not_confirm_the_issue(
    legacy: Scene,
) -> None:
    order_id, handle = await legacy.start()
    await legacy.insert(order_id, await legacy.rider_pack())
    order = await legacy.until_stage(order_id, SwapStage.CHARGED_DOOR_OPEN)
    assert order.issued_battery_serial is not None
    charged = sim_battery(await battery(legacy.db, order.issued_battery_serial))
    await publish_report(legacy.settings, charged, cabinet_id="cab-sh-002-1", slot_no=3)
    await asyncio.sleep(1.0)
    await legacy.skip(legacy.settings.swap.charged_take_timeout_s + 1)
    result = await handle.result()
    assert (result.status, result.failure_reason) == (SwapStatus.FAILED, "charged_take_not_confirmed")
    assert await count(legacy.db, Alert, Alert.kind == "forged_pack_report") == 1
    assert (await battery(legacy.db, order.issued_battery_serial)).custodian_kind == CustodianKind.SLOT
    await assert_refunded_once(legacy.db, order_id, legacy.env.client)


async def test_a_swap_recorded_before_the_two_fact_rule_replays_as_it_ran() -> None:
    """A command-only cabinet's swap whose return one report without charging current confirmed, as the
    workflow did before it asked for a second fact (it then failed on the take): its history, recorded
    with that workflow, replays on today's (the rule is behind a patch)."""
    history = WorkflowHistory.from_json(
        "swap/recorded", (HISTORIES / "swap_command_only_before_two_facts.json").read_text()
    )
    await Replayer(workflows=[SwapWorkflow], data_converter=pydantic_data_converter).replay_workflow(history)
