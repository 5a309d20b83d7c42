"""Helpers shared by the swap tests: a worker on the test's task queue and the rows a swap starts from."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import select, update
from temporalio.client import Client
from temporalio.worker import Worker

from swapflow.db.engine import Database
from swapflow.db.network import Battery, Cabinet
from swapflow.db.swaps import SwapOrder
from swapflow.device_adapter.adapter import DeviceAdapter
from swapflow.device_commands.queue import CommandQueue
from swapflow.domain.network import CustodianKind
from swapflow.payments.refunds import swap_refund_id
from swapflow.settings import Settings
from swapflow.simulator.cabinet import SimulatedCabinet
from swapflow.simulator.fleet import build_cabinets
from swapflow.worker import build_worker
from swapflow.workflows.refund_contract import RefundOutcome, refund_workflow_id


@asynccontextmanager
async def running_worker(client: Client, settings: Settings, db: Database) -> AsyncIterator[Worker]:
    """The real worker (workflows and activities) with its command publisher, for the test's duration."""
    commands_out = CommandQueue(settings, name="test-worker")
    publisher_task = asyncio.create_task(commands_out.run())
    await asyncio.wait_for(commands_out.publisher.connected.wait(), 10)
    try:
        async with build_worker(client, settings, db, commands_out) as worker:
            yield worker
    finally:
        publisher_task.cancel()


@asynccontextmanager
async def running_cabinet(
    client: Client, settings: Settings, db: Database, cabinet_id: str
) -> AsyncIterator[SimulatedCabinet]:
    """A simulated cabinet on the broker and the real device adapter that routes its messages to
    workflows, both running for the test's duration."""
    adapter = DeviceAdapter(settings, db, client)
    cabinet = (
        await build_cabinets(
            settings, db, cabinet_ids=[cabinet_id], telemetry_interval_s=1.0, battery_report_interval_s=0.5
        )
    )[cabinet_id]
    tasks = [asyncio.create_task(adapter.run()), asyncio.create_task(cabinet.run())]
    try:
        await asyncio.wait_for(adapter.ready.wait(), 10)
        await asyncio.wait_for(cabinet.ready.wait(), 10)
        for _ in range(0 if cabinet.command_only else 100):  # until the adapter has taken the birth in
            async with db.sessions() as session:
                if await session.scalar(select(Cabinet.online).where(Cabinet.id == cabinet_id)):
                    break
            await asyncio.sleep(0.05)
        yield cabinet
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def new_order(db: Database, rider_id: str, cabinet_id: str) -> str:
    """A swap order as the API creates it; returns its id."""
    order_id = uuid.uuid4().hex
    async with db.transaction() as session:
        session.add(
            SwapOrder(id=order_id, rider_id=rider_id, cabinet_id=cabinet_id, idempotency_key=uuid.uuid4().hex, steps=[])
        )
    return order_id


async def set_online(db: Database, cabinet_id: str, online: bool) -> None:
    async with db.transaction() as session:
        await session.execute(update(Cabinet).where(Cabinet.id == cabinet_id).values(online=online))


async def battery_of(db: Database, rider_id: str) -> Battery | None:
    """The pack a rider holds."""
    async with db.sessions() as session:
        return await session.scalar(
            select(Battery).where(Battery.custodian_kind == CustodianKind.RIDER, Battery.custodian_ref == rider_id)
        )


async def swap_refund_outcome(client: Client, order_id: str) -> RefundOutcome:
    """How the refund a failed swap started ended (its workflow runs on after the swap has finished)."""
    return await client.get_workflow_handle(
        refund_workflow_id(swap_refund_id(order_id)), result_type=RefundOutcome
    ).result()
