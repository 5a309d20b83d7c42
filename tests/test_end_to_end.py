"""End to end: the real stack as `swapflow up` runs it (Temporal dev server, broker, device adapter,
API and worker, each its own process) and a simulated cabinet on MQTT; a rider swaps through HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

from swapflow.db.engine import Database
from swapflow.db.money import LedgerPosting, LedgerTransaction
from swapflow.db.network import Battery
from swapflow.db.swaps import CustodyEvent, SwapOrder
from swapflow.demo.accounts import load_demo_tokens
from swapflow.domain.network import CustodianKind
from swapflow.infra.temporal import connect_temporal
from swapflow.ops.invariants import check_invariants
from swapflow.settings import Settings
from swapflow.simulator.cabinet import SimulatedCabinet
from swapflow.simulator.fleet import build_cabinets, sim_battery
from swapflow.simulator.riders import SimulatedRider
from swapflow.stack.supervisor import Stack, UpOptions
from tests.conftest import free_port
from tests.swap_harness import battery_of

CABINET = "cab-sh-001-1"
RIDER = "rider-sh-0001"


@asynccontextmanager
async def whole_stack(settings: Settings, **changes: Any) -> AsyncIterator[Stack]:
    """The whole stack on free ports (and with `changes` to the settings), stopped on leaving."""
    stack_settings = settings.updated(
        api={"port": free_port()},
        temporal={"dev_port": free_port(), "ui_port": free_port()},
        embedded_broker={"port": free_port()},
        gateway={"port": free_port()},
    ).updated(**changes)
    running = Stack(stack_settings, UpOptions(simulate=False))
    try:
        await running.start()
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def running_stack(settings: Settings) -> AsyncIterator[Stack]:
    """The whole stack on free ports, stopped after the test."""
    async with whole_stack(settings) as running:
        yield running


@pytest.fixture
def stack(running_stack: Stack) -> Settings:
    return running_stack.settings


@pytest.fixture
async def cabinet(stack: Settings, db: Database) -> AsyncIterator[SimulatedCabinet]:
    """The simulated cabinet, online as far as the platform knows."""
    cabinets = await build_cabinets(stack, db, cabinet_ids=[CABINET], telemetry_interval_s=1.0)
    task = asyncio.create_task(cabinets[CABINET].run())
    try:
        await asyncio.wait_for(cabinets[CABINET].ready.wait(), 20)
        async with httpx.AsyncClient(base_url=stack.api.effective_url) as http:
            for _ in range(100):
                if (await http.get(f"/v1/cabinets/{CABINET}")).json()["online"]:
                    break
                await asyncio.sleep(0.1)
        yield cabinets[CABINET]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def follow(http: httpx.AsyncClient, swap_id: str, stage: str, timeout_s: float = 60) -> dict:
    """GET the swap until it reaches `stage` or ends."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        swap = (await http.get(f"/v1/swaps/{swap_id}")).json()
        if swap["stage"] == stage or swap["status"] != "in_progress":
            return swap
        await asyncio.sleep(0.1)
    raise AssertionError(f"swap {swap_id} never reached {stage}: {swap}")


async def test_every_process_of_the_stack_stays_up(running_stack: Stack) -> None:
    await asyncio.sleep(3)  # a process that fails on start (a port, a setting) has exited by now
    assert {p.name for p in running_stack.processes} >= {"worker", "adapter", "gateway", "api"}
    assert [(p.name, p.returncode) for p in running_stack.processes if p.exited] == []


async def test_the_stack_runs_as_many_workers_as_configured_each_polling_the_task_queue(settings: Settings) -> None:
    async with whole_stack(settings, worker_processes=2) as running:
        assert [p.name for p in running.processes if p.name.startswith("worker")] == ["worker", "worker-2"]
        client = await connect_temporal(running.settings)
        request = DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=running.settings.temporal.task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
        for _ in range(100):
            pollers = (await client.workflow_service.describe_task_queue(request)).pollers
            if len({poller.identity for poller in pollers}) == 2:
                break
            await asyncio.sleep(0.2)
        assert len({poller.identity for poller in pollers}) == 2


async def test_rider_swaps_through_http_and_custody_and_ledger_follow(stack: Settings, db: Database) -> None:
    cabinets = await build_cabinets(stack, db, cabinet_ids=[CABINET], telemetry_interval_s=1.0)
    cabinet = cabinets[CABINET]
    held = await battery_of(db, RIDER)
    assert held is not None
    cabinet_task = asyncio.create_task(cabinet.run())
    try:
        await asyncio.wait_for(cabinet.ready.wait(), 20)
        async with httpx.AsyncClient(base_url=stack.api.effective_url, timeout=30) as http:
            # The adapter marks the cabinet online from its birth message.
            for _ in range(100):
                listed = (await http.get(f"/v1/cabinets/{CABINET}")).json()
                if listed["online"]:
                    break
                await asyncio.sleep(0.1)
            assert listed["online"]
            rider = SimulatedRider(
                stack.api.effective_url,
                RIDER,
                sim_battery(held),
                listed["lat"],
                listed["lon"],
                cabinets,
                http,
                swap_timeout_s=60,
                token=load_demo_tokens(stack.data_dir).riders[RIDER],
            )
            swap = await rider.swap_once()
    finally:
        cabinet_task.cancel()

    assert swap is not None and swap["status"] == "completed", swap
    async with db.sessions() as session:
        order = await session.get(SwapOrder, swap["id"])
        assert order is not None
        returned = await session.get(Battery, held.serial)
        issued = await session.get(Battery, order.issued_battery_serial)
        assert returned is not None and issued is not None
        assert (returned.custodian_kind, returned.custodian_ref) == (
            CustodianKind.SLOT,
            f"{CABINET}/{order.return_slot_no}",
        )
        assert (issued.custodian_kind, issued.custodian_ref) == (CustodianKind.RIDER, RIDER)
        custody = (await session.scalars(select(CustodyEvent).where(CustodyEvent.order_id == order.id))).all()
        assert {(c.battery_serial, c.from_kind, c.to_kind) for c in custody} == {
            (held.serial, CustodianKind.RIDER, CustodianKind.SLOT),
            (issued.serial, CustodianKind.SLOT, CustodianKind.RIDER),
        }
        kinds = set(
            (await session.scalars(select(LedgerTransaction.kind).where(LedgerTransaction.order_id == order.id))).all()
        )
        assert kinds == {"swap_charge", "swap_revenue", "commission_accrual"}
        balances = dict(
            (
                await session.execute(
                    select(LedgerPosting.account, func.sum(LedgerPosting.amount_minor)).group_by(LedgerPosting.account)
                )
            )
            .tuples()
            .all()
        )
        payables = {account: amount for account, amount in balances.items() if account.startswith("partner_payable:")}
        commissions = balances.pop("expense:commissions")
        assert balances == {
            "provider_clearing:sandbox": order.price_minor,
            "deferred_revenue:swaps": 0,
            "revenue:swaps": -order.price_minor,
            **payables,
        }
        assert commissions > 0 and sum(payables.values()) == -commissions


async def test_swap_survives_its_worker_being_killed_mid_swap(
    running_stack: Stack, cabinet: SimulatedCabinet, db: Database
) -> None:
    held = await battery_of(db, RIDER)
    assert held is not None
    worker = next(p for p in running_stack.processes if p.name == "worker")
    token = load_demo_tokens(running_stack.settings.data_dir).riders[RIDER]  # seeded by the stack
    async with httpx.AsyncClient(
        base_url=running_stack.settings.api.effective_url, timeout=30, headers={"Authorization": f"Bearer {token}"}
    ) as http:
        swap = (
            await http.post(
                "/v1/swaps",
                json={"rider_id": RIDER, "cabinet_id": CABINET},
                headers={"Idempotency-Key": "kill-the-worker"},
            )
        ).json()
        assert swap["stage"] == "return_door_open", swap
        assert worker.process is not None
        worker.process.kill()  # no clean shutdown: as if the machine died
        await worker.process.wait()
        await cabinet.insert_battery(swap["return_slot_no"], sim_battery(held))
        await worker.start()  # a new worker replays the history and carries on
        swap = await follow(http, swap["id"], "charged_door_open")
        assert swap["stage"] == "charged_door_open", swap
        assert swap["source"] == "workflow" and any(s["step"] == "verify_return" for s in swap["steps"])
        await cabinet.take_battery(swap["charged_slot_no"])
        swap = await follow(http, swap["id"], "completed")
    assert swap["status"] == "completed", swap
    report = await check_invariants(db)
    assert report.ok, report.violations
