"""Swaps at cabinets that only receive commands (legacy): nothing is assumed from a command having
been sent; the packs' own telemetry confirms the return and the issue, and without that evidence the
swap is rolled back and an operator is asked to check the slot."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import update
from temporalio.testing import WorkflowEnvironment

from swapflow.db.engine import Database
from swapflow.db.models import Alert, Cabinet, CabinetCapability, CustodianKind, SwapStage, SwapStatus
from swapflow.settings import Settings
from swapflow.simulator.battery import SimBattery
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
    return settings.model_copy(update={"command_ack_timeout_s": 1.5, "return_insert_timeout_s": 20.0,
                                       "charged_take_timeout_s": 20.0, "offline_grace_s": 20.0})


@pytest.fixture
async def legacy(temporal_env: WorkflowEnvironment, settings: Settings, db: Database) -> AsyncIterator[Scene]:
    async with db.transaction() as session:
        await session.execute(update(Cabinet).where(Cabinet.id == CABINET)
                              .values(capability=CabinetCapability.COMMAND_ONLY, online=False))
    async with running_worker(temporal_env.client, settings, db), \
            running_cabinet(temporal_env.client, settings, db, CABINET) as cabinet:
        assert cabinet.command_only
        with temporal_env.auto_time_skipping_disabled():
            yield Scene(temporal_env, settings, db, cabinet)


async def test_swap_at_a_command_only_cabinet_is_confirmed_by_the_packs_own_reports(legacy: Scene) -> None:
    order_id, handle = await legacy.start()
    returned = await legacy.rider_pack()
    order = await legacy.insert(order_id, returned)
    taken = await legacy.take(order_id)
    result = await handle.result()
    assert result.status == SwapStatus.COMPLETED, result
    assert (await battery(legacy.db, returned.serial)).custodian_ref == f"{CABINET}/{order.return_slot_no}"
    issued = await battery(legacy.db, taken.serial)
    assert (issued.custodian_kind, issued.custodian_ref) == (CustodianKind.RIDER, RIDER)
    assert await ledger_kinds(legacy.db, order_id) == ["swap_charge", "swap_revenue"]
    await assert_invariants(legacy.db)


async def test_no_evidence_of_the_return_rolls_back_and_asks_an_operator_to_check(legacy: Scene) -> None:
    order_id, handle = await legacy.start()
    held = await battery_of(legacy.db, RIDER)
    await legacy.until_stage(order_id, SwapStage.RETURN_DOOR_OPEN)
    await legacy.skip(legacy.settings.return_insert_timeout_s + 1)
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
    await legacy.skip(legacy.settings.charged_take_timeout_s + 1)
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
