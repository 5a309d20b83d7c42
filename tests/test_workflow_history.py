"""A workflow's history as a timeline: read from Temporal (the time-skipping server, the real worker, a
simulated cabinet behind the real device adapter), it shows a swap's door commands, the device's door and
pack facts, a failed swap's compensations and its child refund; the same reader serves every workflow."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.testing import WorkflowEnvironment

from swapflow.db.engine import Database
from swapflow.db.swaps import SwapOrder
from swapflow.domain.errors import NotFound
from swapflow.domain.swaps import SwapStage, SwapStatus
from swapflow.payments.refunds import swap_refund_id
from swapflow.services.swaps import swap_request
from swapflow.services.workflow_history import EntryKind, Outcome, WorkflowStatus, timeline_of, workflow_timeline
from swapflow.settings import Settings
from swapflow.simulator.cabinet import SimulatedCabinet
from swapflow.simulator.fleet import sim_battery
from swapflow.workflows.refund_contract import refund_workflow_id
from swapflow.workflows.swap import SwapWorkflow
from swapflow.workflows.swap_contract import swap_workflow_id
from tests.swap_harness import battery_of, new_order, running_cabinet, running_worker, swap_refund_outcome

CABINET = "cab-sh-001-1"
RIDER = "rider-sh-0001"
HISTORIES = Path(__file__).parent / "histories"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.updated(
        swap={"command_ack_timeout_s": 1.5, "return_insert_timeout_s": 20.0, "charged_take_timeout_s": 20.0},
        temporal={"ui_url": "http://temporal.example:8080/"},
    )


@pytest.fixture
async def cabinet(
    temporal_env: WorkflowEnvironment, settings: Settings, db: Database
) -> AsyncIterator[SimulatedCabinet]:
    async with (
        running_worker(temporal_env.client, settings, db),
        running_cabinet(temporal_env.client, settings, db, CABINET) as cabinet,
    ):
        with temporal_env.auto_time_skipping_disabled():
            yield cabinet


async def start_swap(env: WorkflowEnvironment, settings: Settings, db: Database) -> str:
    order_id = await new_order(db, RIDER, CABINET)
    request = swap_request(settings, order_id=order_id, rider_id=RIDER, cabinet_id=CABINET)
    await env.client.start_workflow(
        SwapWorkflow.run, request, id=swap_workflow_id(order_id), task_queue=settings.temporal.task_queue
    )
    return order_id


async def until_stage(db: Database, order_id: str, stage: SwapStage) -> SwapOrder:
    for _ in range(300):
        async with db.sessions() as session:
            order = await session.get(SwapOrder, order_id)
        if order is not None and (order.stage == stage or order.status == SwapStatus.FAILED):
            return order
        await asyncio.sleep(0.05)
    raise AssertionError(f"order {order_id} never reached {stage}")


async def until_door_open(cabinet: SimulatedCabinet, slot_no: int) -> None:
    for _ in range(300):
        if cabinet.door_open(slot_no):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"door {slot_no} never opened")


async def test_a_completed_swap_shows_its_door_commands_and_the_cabinets_door_and_pack_facts(
    temporal_env: WorkflowEnvironment, settings: Settings, db: Database, cabinet: SimulatedCabinet
) -> None:
    order_id = await start_swap(temporal_env, settings, db)
    held = await battery_of(db, RIDER)
    assert held is not None
    order = await until_stage(db, order_id, SwapStage.RETURN_DOOR_OPEN)
    assert order.return_slot_no is not None
    await until_door_open(cabinet, order.return_slot_no)
    await cabinet.insert_battery(order.return_slot_no, sim_battery(held))
    order = await until_stage(db, order_id, SwapStage.CHARGED_DOOR_OPEN)
    assert order.charged_slot_no is not None
    await until_door_open(cabinet, order.charged_slot_no)
    await cabinet.take_battery(order.charged_slot_no)
    await temporal_env.client.get_workflow_handle(swap_workflow_id(order_id)).result()

    timeline = await workflow_timeline(temporal_env.client, settings.temporal, swap_workflow_id(order_id))

    assert (timeline.workflow_type, timeline.status) == ("Swap", WorkflowStatus.COMPLETED)
    assert timeline.closed_at is not None and timeline.started_at <= timeline.closed_at
    commands = timeline.named("send_device_command")
    assert len(commands) == 2 and all(c.kind == EntryKind.LOCAL_ACTIVITY for c in commands)
    assert all(c.data["acked"] and c.data["ok"] for c in commands)
    facts = [(s.data["kind"], s.data["slot_no"]) for s in timeline.entries if s.kind == EntryKind.SIGNAL]
    assert facts == [
        ("battery_inserted", order.return_slot_no),
        ("door_closed", order.return_slot_no),
        ("battery_removed", order.charged_slot_no),
        ("door_closed", order.charged_slot_no),
    ]
    charge = timeline.named("charge_swap")[0]
    assert (charge.kind, charge.outcome, charge.attempts) == (EntryKind.ACTIVITY, Outcome.OK, 1)
    assert charge.duration is not None and charge.duration >= timedelta(0)
    assert timeline.compensations == []


async def test_a_failed_swap_shows_its_compensations_and_the_refund_it_started(
    temporal_env: WorkflowEnvironment, settings: Settings, db: Database, cabinet: SimulatedCabinet
) -> None:
    order_id = await start_swap(temporal_env, settings, db)
    await until_stage(db, order_id, SwapStage.RETURN_DOOR_OPEN)
    await temporal_env.sleep(timedelta(seconds=settings.swap.return_insert_timeout_s + 1))  # the rider walks away
    await temporal_env.client.get_workflow_handle(swap_workflow_id(order_id)).result()
    await swap_refund_outcome(temporal_env.client, order_id)

    timeline = await workflow_timeline(temporal_env.client, settings.temporal, swap_workflow_id(order_id))

    wait = next(e for e in timeline.entries if e.kind == EntryKind.TIMER and e.outcome == Outcome.FIRED)
    assert wait.name == f"timer {settings.swap.return_insert_timeout_s:g}s"
    assert [(c.kind, c.name) for c in timeline.compensations] == [
        (EntryKind.LOCAL_ACTIVITY, "send_device_command"),  # the return door closed behind nobody
        (EntryKind.CHILD_WORKFLOW, "Refund"),
    ]
    refund = timeline.compensations[-1]
    assert refund.child_workflow_id == refund_workflow_id(swap_refund_id(order_id))
    assert timeline.result["status"] == "failed"
    assert timeline.result["failure_reason"] == "battery_not_returned_in_time"


async def test_the_same_reader_follows_the_refund_a_failed_swap_started(
    temporal_env: WorkflowEnvironment, settings: Settings, db: Database, cabinet: SimulatedCabinet
) -> None:
    order_id = await start_swap(temporal_env, settings, db)
    await until_stage(db, order_id, SwapStage.RETURN_DOOR_OPEN)
    await temporal_env.sleep(timedelta(seconds=settings.swap.return_insert_timeout_s + 1))
    await swap_refund_outcome(temporal_env.client, order_id)

    refund_id = refund_workflow_id(swap_refund_id(order_id))
    timeline = await workflow_timeline(temporal_env.client, settings.temporal, refund_id)

    assert (timeline.workflow_type, timeline.status) == ("Refund", WorkflowStatus.COMPLETED)
    assert [e.name for e in timeline.entries if e.kind == EntryKind.ACTIVITY][:2] == ["prepare_refund", "submit_refund"]
    assert timeline.temporal_ui_url.startswith(
        "http://temporal.example:8080/namespaces/default/workflows/refund%2Fswap-"
    )


async def test_an_unknown_workflow_is_not_found(temporal_env: WorkflowEnvironment, settings: Settings) -> None:
    with pytest.raises(NotFound):
        await workflow_timeline(temporal_env.client, settings.temporal, "swap/no-such-order")


@pytest.mark.parametrize("name", sorted(path.stem for path in HISTORIES.glob("*.json")))
def test_every_recorded_history_reads_to_the_end_its_workflow_came_to(name: str, settings: Settings) -> None:
    history = WorkflowHistory.from_json(name, (HISTORIES / f"{name}.json").read_text())
    timeline = timeline_of(name, history.events, settings.temporal)
    assert timeline.status != WorkflowStatus.RUNNING and timeline.closed_at is not None
    assert timeline.entries
    assert all(e.outcome != Outcome.RUNNING for e in timeline.entries if e.kind != EntryKind.CHILD_WORKFLOW)
