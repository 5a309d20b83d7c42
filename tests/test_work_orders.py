"""Device problems become alerts and work orders that a person fixes and the platform verifies: the
alert evaluator and the work-order workflow on the time-skipping server, with the real worker, the
real device adapter, a simulated cabinet on a real broker and a real database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select, update
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from swapflow.api.app import create_app
from swapflow.db.engine import Database
from swapflow.db.network import Cabinet, Slot, Station
from swapflow.db.ops import Alert, WorkOrder, WorkOrderEvent
from swapflow.device_adapter.presence import record_transition
from swapflow.domain.clock import as_utc, utcnow
from swapflow.domain.network import CabinetCapability, PresenceCause
from swapflow.domain.ops import AlertStatus, OperatorRole, WorkOrderStatus
from swapflow.ops.figures import incident_figures
from swapflow.ops.uptime import Period
from swapflow.services.work_orders import new_work_order, work_order_input
from swapflow.settings import Settings
from swapflow.simulator.cabinet import SimulatedCabinet
from swapflow.workflows.alert_evaluator import AlertEvaluatorWorkflow
from swapflow.workflows.alert_evaluator_contract import EvaluatorInput
from swapflow.workflows.work_order import WorkOrderWorkflow
from swapflow.workflows.work_order_contract import Accept, Resolve, work_order_workflow_id
from tests.conftest import test_server_path as time_skipping_server  # not a test
from tests.history_recording import RecordHistory
from tests.ops_harness import another_token, bearer, operator_token
from tests.swap_harness import running_cabinet, running_worker

CABINET = "cab-sh-001-1"
SLOT = 5
NEVER = (0, 0)  # a shift that never starts


@pytest.fixture
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of each test's own: skipping an SLA's worth of time must not fire the
    timers of earlier tests' workflows (an alert evaluator's loop would run its activities for every
    interval skipped, in real time, and the skip would time out)."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=time_skipping_server(), data_converter=pydantic_data_converter
    )
    yield env
    await env.shutdown()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Short bounds: the evaluator and the verification run in real time here."""
    return settings.updated(
        ops={"offline_alert_after_s": 60.0, "verify_ack_timeout_s": 3.0}, swap={"command_ack_timeout_s": 1.5}
    )


@pytest.fixture
async def staff(db: Database) -> None:
    """Shanghai's lead and technicians: one on duty near the cabinet, one on duty far away, one off duty
    right at the cabinet; and a technician of another city right at it."""
    async with db.sessions() as session:
        station = await session.scalar(select(Station).join(Cabinet).where(Cabinet.id == CABINET))
    assert station is not None
    here = (station.lat, station.lon)
    await operator_token(db, "lead-sh", OperatorRole.CITY_LEAD, ["SH"])
    await operator_token(db, "tech-near", OperatorRole.TECHNICIAN, ["SH"], location=(here[0] + 0.01, here[1]))
    await operator_token(db, "tech-far", OperatorRole.TECHNICIAN, ["SH"], location=(here[0] + 0.3, here[1]))
    await operator_token(db, "tech-asleep", OperatorRole.TECHNICIAN, ["SH"], location=here, shift=NEVER)
    await operator_token(db, "tech-sz", OperatorRole.TECHNICIAN, ["SZ"], location=here)


@pytest.fixture
async def worker(
    temporal_env: WorkflowEnvironment, settings: Settings, db: Database, staff: None
) -> AsyncIterator[WorkflowEnvironment]:
    """The real worker; time moves only when a test skips it (the evaluator and the cabinet are real)."""
    async with running_worker(temporal_env.client, settings, db):
        with temporal_env.auto_time_skipping_disabled():
            yield temporal_env


@pytest.fixture
async def cabinet(worker: WorkflowEnvironment, settings: Settings, db: Database) -> AsyncIterator[SimulatedCabinet]:
    async with running_cabinet(worker.client, settings, db, CABINET) as running:
        yield running


async def went_offline(db: Database, cabinet_id: str, minutes_ago: float) -> None:
    """The cabinet dropped off the network some minutes ago, as the adapter records it."""
    at = utcnow() - timedelta(minutes=minutes_ago)
    async with db.transaction() as session:
        await session.execute(
            update(Cabinet).where(Cabinet.id == cabinet_id).values(online=False, last_seen_at=at - timedelta(seconds=5))
        )
        record_transition(session, cabinet_id, True, PresenceCause.BIRTH, at - timedelta(hours=1))
        record_transition(session, cabinet_id, False, PresenceCause.LAST_WILL, at)


async def until(predicate, timeout_s: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        found = await predicate()
        if found:
            return found
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.1)


async def work_order(db: Database, work_order_id: str) -> WorkOrder:
    async with db.sessions() as session:
        order = await session.get(WorkOrder, work_order_id)
    assert order is not None
    return order


async def timeline(db: Database, work_order_id: str) -> list[str]:
    async with db.sessions() as session:
        return list(
            (
                await session.scalars(
                    select(WorkOrderEvent.kind)
                    .where(WorkOrderEvent.work_order_id == work_order_id)
                    .order_by(WorkOrderEvent.seq)
                )
            ).all()
        )


async def open_order(
    env: WorkflowEnvironment,
    settings: Settings,
    db: Database,
    slot_no: int | None,
    kind: str = "door_fault",
    severity: str = "warning",
) -> tuple[str, WorkflowHandle[WorkOrderWorkflow, object]]:
    """A work order as the evaluator or the API opens one, and its running workflow, once dispatched."""
    async with db.transaction() as session:
        order = await new_work_order(
            session,
            cabinet_id=CABINET,
            slot_no=slot_no,
            kind=kind,
            severity=severity,
            source="operator",
            description="test",
        )
        request = work_order_input(settings, order, CabinetCapability.REPORTING)
    handle = await env.client.start_workflow(
        WorkOrderWorkflow.run,
        request,
        id=work_order_workflow_id(request.work_order_id),
        task_queue=settings.temporal.task_queue,
    )

    async def dispatched() -> bool:
        return (await work_order(db, request.work_order_id)).status != WorkOrderStatus.NEW

    await until(dispatched)

    async def sla_timer_set() -> bool:
        # The dispatch is written by a local activity before its workflow task completes: the SLA timer
        # reaches the server only with that completion. Skipping time before it would skip past nothing.
        history = await handle.fetch_history()
        return any(event.event_type == EventType.EVENT_TYPE_TIMER_STARTED for event in history.events)

    await until(sla_timer_set)
    return request.work_order_id, handle


async def door_out_of_service(db: Database, slot_no: int) -> None:
    async with db.transaction() as session:
        await session.execute(
            update(Slot)
            .where(Slot.cabinet_id == CABINET, Slot.slot_no == slot_no)
            .values(out_of_service="open_door_not_acknowledged")
        )


@pytest.mark.records_history
async def test_an_offline_cabinet_raises_one_alert_and_one_work_order_for_the_nearest_technician_on_duty(
    worker: WorkflowEnvironment, settings: Settings, db: Database, record_history: RecordHistory
) -> None:
    await went_offline(db, CABINET, minutes_ago=5)
    evaluator = await worker.client.start_workflow(
        AlertEvaluatorWorkflow.run,
        EvaluatorInput(interval_s=0.2, per_run=1000),
        id=f"evaluator-{settings.temporal.task_queue}",
        task_queue=settings.temporal.task_queue,
    )

    async def dispatched_order() -> WorkOrder | None:
        async with db.sessions() as session:
            return await session.scalar(
                select(WorkOrder).where(WorkOrder.cabinet_id == CABINET, WorkOrder.status == WorkOrderStatus.DISPATCHED)
            )

    order = await until(dispatched_order)
    await asyncio.sleep(1.0)  # a few more rounds of the rules: nothing is opened twice
    await evaluator.terminate()
    await record_history(evaluator.id, "alert_evaluator")
    await worker.client.get_workflow_handle(work_order_workflow_id(order.id)).terminate()  # left to its SLA
    async with db.sessions() as session:
        alerts = (await session.scalars(select(Alert).where(Alert.cabinet_id == CABINET))).all()
        orders = await session.scalar(select(func.count()).select_from(WorkOrder))
    assert [(a.kind, a.status, a.severity) for a in alerts] == [("cabinet_offline", AlertStatus.OPEN, "critical")]
    assert orders == 1
    assert order.technician_id == "tech-near"
    assert order.alert_id == alerts[0].id and order.slot_no is None
    assert await timeline(db, order.id) == ["opened", "dispatched"]


async def test_the_ack_sla_timer_escalates_to_the_city_lead(
    worker: WorkflowEnvironment, settings: Settings, db: Database
) -> None:
    order_id, handle = await open_order(worker, settings, db, None, kind="cabinet_offline", severity="critical")
    await worker.sleep(timedelta(seconds=settings.ops.sla["critical"].ack_s + 1))

    async def escalated() -> bool:
        return (await work_order(db, order_id)).escalated_to is not None

    await until(escalated)
    assert (await work_order(db, order_id)).escalated_to == "lead-sh"
    assert await timeline(db, order_id) == ["opened", "dispatched", "escalated"]
    assert (await handle.query(WorkOrderWorkflow.state)).escalations == ("ack",)
    async with db.sessions() as session:
        kinds = (await session.scalars(select(Alert.kind).where(Alert.cabinet_id == CABINET))).all()
    assert kinds == ["work_order_ack_sla"]


async def test_a_resolution_while_the_door_still_jams_reopens_the_order(
    cabinet: SimulatedCabinet, worker: WorkflowEnvironment, settings: Settings, db: Database
) -> None:
    await door_out_of_service(db, SLOT)
    cabinet.jammed_slots.add(SLOT)
    order_id, handle = await open_order(worker, settings, db, SLOT)
    await handle.execute_update(WorkOrderWorkflow.accept, Accept(actor="tech-near"))
    await handle.execute_update(WorkOrderWorkflow.resolve, Resolve(actor="tech-near", note="oiled the latch"))

    async def reopened() -> bool:
        return (await work_order(db, order_id)).reopen_count > 0

    await until(reopened)
    order = await work_order(db, order_id)
    assert order.status == WorkOrderStatus.ACCEPTED and order.closed_at is None
    assert await timeline(db, order_id) == ["opened", "dispatched", "accepted", "resolved", "reopened"]
    state = await handle.query(WorkOrderWorkflow.state)
    assert state.last_verification == (f"open_door on slot {SLOT} not acknowledged",)
    async with db.sessions() as session:
        slot = await session.scalar(select(Slot).where(Slot.cabinet_id == CABINET, Slot.slot_no == SLOT))
    assert slot is not None and slot.out_of_service is not None  # still out of swaps


async def test_a_resolution_while_the_cabinet_still_reports_a_pack_that_is_not_ours_there_reopens_the_order(
    cabinet: SimulatedCabinet, worker: WorkflowEnvironment, settings: Settings, db: Database
) -> None:
    await door_out_of_service(db, SLOT)
    async with db.transaction() as session:  # as the adapter records a foreign pack's report
        await session.execute(
            update(Slot)
            .where(Slot.cabinet_id == CABINET, Slot.slot_no == SLOT)
            .values(battery_serial=None, reported_serial="FAKE-0001", reported_at=utcnow())
        )
    order_id, handle = await open_order(worker, settings, db, SLOT)
    await handle.execute_update(WorkOrderWorkflow.accept, Accept(actor="tech-near"))
    await handle.execute_update(WorkOrderWorkflow.resolve, Resolve(actor="tech-near"))

    async def reopened() -> bool:
        return (await work_order(db, order_id)).reopen_count > 0

    await until(reopened)
    state = await handle.query(WorkOrderWorkflow.state)
    assert state.last_verification == ("the cabinet reports pack FAKE-0001 in the slot, which custody does not hold",)


@pytest.mark.records_history
async def test_a_verified_fix_closes_the_order_puts_the_slot_back_and_counts_in_mttr(
    cabinet: SimulatedCabinet,
    worker: WorkflowEnvironment,
    settings: Settings,
    db: Database,
    record_history: RecordHistory,
) -> None:
    await door_out_of_service(db, SLOT)
    order_id, handle = await open_order(worker, settings, db, SLOT)
    await handle.execute_update(WorkOrderWorkflow.accept, Accept(actor="tech-near"))
    await handle.execute_update(WorkOrderWorkflow.resolve, Resolve(actor="tech-near"))
    state = await handle.result()
    await record_history(handle.id, "work_order_closed_after_verification")

    assert state.status == WorkOrderStatus.CLOSED
    assert await timeline(db, order_id) == ["opened", "dispatched", "accepted", "resolved", "closed"]
    async with db.sessions() as session:
        slot = await session.scalar(select(Slot).where(Slot.cabinet_id == CABINET, Slot.slot_no == SLOT))
        steps = {
            e.kind: as_utc(e.at)
            for e in await session.scalars(select(WorkOrderEvent).where(WorkOrderEvent.work_order_id == order_id))
        }
        figures = await incident_figures(session, Period(utcnow() - timedelta(hours=1), utcnow()), ["SH"])
    assert slot is not None and slot.out_of_service is None and not slot.locked
    assert len(figures) == 1 and figures[0].closed == 1
    opened = as_utc((await work_order(db, order_id)).opened_at)
    assert figures[0].mttr_s == pytest.approx((steps["closed"] - opened).total_seconds(), abs=1e-3)
    assert figures[0].mtta_s == pytest.approx((steps["accepted"] - opened).total_seconds(), abs=1e-3)


async def test_a_technician_accepts_and_resolves_through_the_api_and_only_their_own_order(
    cabinet: SimulatedCabinet, worker: WorkflowEnvironment, settings: Settings, db: Database
) -> None:
    await door_out_of_service(db, SLOT)
    order_id, handle = await open_order(worker, settings, db, SLOT)
    near, far = bearer(await another_token(db, "tech-near")), bearer(await another_token(db, "tech-far"))
    api_settings = settings.updated(temporal={"address": worker.client.service_client.config.target_host})
    app = create_app(api_settings)
    # An async client in this loop: the worker runs here too, and must keep running while the API waits.
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as api,
    ):
        mine = (await api.get("/v1/ops/work-orders", params={"assigned": "me"}, headers=near)).json()
        assert [o["id"] for o in mine] == [order_id]
        assert (await api.post(f"/v1/ops/work-orders/{order_id}/accept", headers=far)).status_code == 409
        accepted = await api.post(f"/v1/ops/work-orders/{order_id}/accept", headers=near)
        assert accepted.status_code == 200 and accepted.json()["status"] == "accepted"
        resolved = await api.post(f"/v1/ops/work-orders/{order_id}/resolve", json={"note": "new latch"}, headers=near)
        assert resolved.status_code == 200
    assert (await handle.result()).status == WorkOrderStatus.CLOSED
