"""The console's swap and battery pages over HTTP, against the app with a real worker on the time-skipping
server: a search in the operator's cities, a swap's page with its stages, door commands and workflow
history (compensations and the child refund included), its live stream, and a pack's charts, custody
trail and safety checks. Another city's swap or pack is not found."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select, update
from temporalio.testing import WorkflowEnvironment

from swapflow.db.devices import BatteryReadingRecord
from swapflow.db.engine import Database
from swapflow.db.network import Battery
from swapflow.db.swaps import CustodyEvent, SafetyEvent, SwapOrder
from swapflow.domain.clock import utcnow
from swapflow.domain.network import CustodianKind
from swapflow.domain.ops import OperatorRole
from swapflow.domain.swaps import SwapStage, SwapStatus
from swapflow.services.swaps import swap_request
from swapflow.settings import Settings
from swapflow.workflows.swap import SwapWorkflow
from swapflow.workflows.swap_contract import swap_workflow_id
from tests.api_harness import app_sharing
from tests.ops_harness import operator_token
from tests.swap_harness import new_order, running_cabinet, running_worker, swap_refund_outcome

SH_CABINET = "cab-sh-001-1"
SZ_CABINET = "cab-sz-001-1"
SH_RIDER = "rider-sh-0001"
SZ_RIDER = "rider-sz-0001"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.updated(
        swap={"command_ack_timeout_s": 1.5, "return_insert_timeout_s": 20.0, "charged_take_timeout_s": 20.0},
        console={"live_poll_s": 0.05},
    )


@pytest.fixture
async def console(
    temporal_env: WorkflowEnvironment, settings: Settings, db: Database
) -> AsyncIterator[httpx.AsyncClient]:
    """The app in the test's event loop (sharing its Temporal client), signed in as an operator of SH."""
    app = app_sharing(settings, db, temporal_env.client)
    token = await operator_token(db, "ops-sh", OperatorRole.OPERATOR, ["SH"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://testserver") as client:
        form = await client.get("/console/sign-in")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert csrf is not None
        signed_in = await client.post("/console/sign-in", data={"token": token, "csrf_token": csrf.group(1)})
        assert signed_in.status_code == 303, signed_in.text
        yield client


async def finished_order(db: Database, rider_id: str, cabinet_id: str, status: SwapStatus) -> str:
    order_id = await new_order(db, rider_id, cabinet_id)
    async with db.transaction() as session:
        await session.execute(update(SwapOrder).where(SwapOrder.id == order_id).values(status=status))
    return order_id


async def test_the_search_finds_the_operators_swaps_by_rider_and_status(
    console: httpx.AsyncClient, db: Database
) -> None:
    failed = await finished_order(db, SH_RIDER, SH_CABINET, SwapStatus.FAILED)
    completed = await finished_order(db, SH_RIDER, SH_CABINET, SwapStatus.COMPLETED)
    elsewhere = await finished_order(db, SZ_RIDER, SZ_CABINET, SwapStatus.FAILED)

    page = await console.get("/console/swaps", params={"rider_id": SH_RIDER, "status": "failed"})

    assert page.status_code == 200
    assert failed in page.text and completed not in page.text and elsewhere not in page.text


async def test_the_search_shows_only_the_operators_cities(console: httpx.AsyncClient, db: Database) -> None:
    mine = await finished_order(db, SH_RIDER, SH_CABINET, SwapStatus.COMPLETED)
    elsewhere = await finished_order(db, SZ_RIDER, SZ_CABINET, SwapStatus.COMPLETED)

    page = await console.get("/console/swaps")

    assert mine in page.text and elsewhere not in page.text


async def test_the_search_pages_through_the_swaps(console: httpx.AsyncClient, db: Database) -> None:
    for _ in range(51):
        await finished_order(db, SH_RIDER, SH_CABINET, SwapStatus.COMPLETED)

    first = await console.get("/console/swaps", params={"cabinet_id": SH_CABINET})
    second = await console.get("/console/swaps", params={"cabinet_id": SH_CABINET, "page": 2})

    assert 'rel="next"' in first.text and f"cabinet_id={SH_CABINET}&amp;page=2" in first.text
    assert second.text.count('href="/console/swaps/') == 1 and 'rel="prev"' in second.text


async def test_an_operator_cannot_open_another_citys_swap(console: httpx.AsyncClient, db: Database) -> None:
    elsewhere = await finished_order(db, SZ_RIDER, SZ_CABINET, SwapStatus.FAILED)

    page = await console.get(f"/console/swaps/{elsewhere}")

    assert page.status_code == 404 and "text/html" in page.headers["content-type"]
    assert (await console.get(f"/console/swaps/{elsewhere}/live")).status_code == 404


async def test_a_swap_not_started_in_temporal_still_shows_its_page(console: httpx.AsyncClient, db: Database) -> None:
    order_id = await finished_order(db, SH_RIDER, SH_CABINET, SwapStatus.FAILED)

    page = await console.get(f"/console/swaps/{order_id}")

    assert page.status_code == 200
    assert "Workflow history unavailable" in page.text and "Temporal has no workflow" in page.text


async def test_a_failed_swaps_page_shows_its_door_commands_history_compensation_and_refund(
    temporal_env: WorkflowEnvironment, console: httpx.AsyncClient, settings: Settings, db: Database
) -> None:
    async with (
        running_worker(temporal_env.client, settings, db),
        running_cabinet(temporal_env.client, settings, db, SH_CABINET),
    ):
        with temporal_env.auto_time_skipping_disabled():
            order_id = await new_order(db, SH_RIDER, SH_CABINET)
            request = swap_request(settings, order_id=order_id, rider_id=SH_RIDER, cabinet_id=SH_CABINET)
            await temporal_env.client.start_workflow(
                SwapWorkflow.run, request, id=swap_workflow_id(order_id), task_queue=settings.temporal.task_queue
            )
            await until_stage(db, order_id, SwapStage.RETURN_DOOR_OPEN)
            await temporal_env.sleep(timedelta(seconds=settings.swap.return_insert_timeout_s + 1))
            await temporal_env.client.get_workflow_handle(swap_workflow_id(order_id)).result()
            await swap_refund_outcome(temporal_env.client, order_id)

    page = await console.get(f"/console/swaps/{order_id}")

    assert page.status_code == 200
    text = page.text
    assert "battery_not_returned_in_time" in text
    assert "open_door" in text and "close_door" in text  # the door commands, with their acks
    # each command step of the history says which command it sent
    assert re.search(rf"open_door slot \d+ \({order_id}-1\): acked=True", text)
    assert re.search(rf"close_door slot \d+ \({order_id}-2\): acked=True", text)
    assert "send_device_command" in text and "charge_swap" in text and "timer 20s" in text
    assert "Refund <strong>(compensation)</strong>" in text
    assert f"refund/swap-{order_id}" in text
    assert f"/namespaces/default/workflows/swap%2F{order_id}/" in text  # the Temporal UI link
    assert "sse-connect" not in text  # a finished swap needs no live stream


async def test_a_running_swaps_live_stream_sends_its_history_until_it_ends(
    temporal_env: WorkflowEnvironment, console: httpx.AsyncClient, settings: Settings, db: Database
) -> None:
    async with running_worker(temporal_env.client, settings, db):
        order_id = await new_order(db, SH_RIDER, SH_CABINET)
        request = swap_request(settings, order_id=order_id, rider_id=SH_RIDER, cabinet_id=SH_CABINET)
        handle = await temporal_env.client.start_workflow(
            SwapWorkflow.run, request, id=swap_workflow_id(order_id), task_queue=settings.temporal.task_queue
        )
        page = await console.get(f"/console/swaps/{order_id}")
        assert 'sse-connect="/console/swaps/' in page.text and 'sse-close="end"' in page.text
        await handle.result()  # the offline cabinet fails it

        stream = await console.get(f"/console/swaps/{order_id}/live")

    assert stream.headers["content-type"].startswith("text/event-stream")
    events = re.findall(r"^event: (\w+)$", stream.text, flags=re.MULTILINE)
    assert events[0] == "swap" and events[-1] == "end"
    assert "admit_swap" in stream.text


async def test_a_packs_page_charts_its_readings_and_lists_its_custody_and_checks(
    console: httpx.AsyncClient, db: Database
) -> None:
    serial = await rider_pack(db, SH_RIDER)
    now = utcnow()
    async with db.transaction() as session:
        for minutes, soc in ((30, 41.5), (20, 63.25), (10, 87.75)):
            session.add(
                BatteryReadingRecord(
                    battery_serial=serial,
                    at=now - timedelta(minutes=minutes),
                    soc=soc,
                    soh=97.0,
                    voltage_v=52.1,
                    current_a=0.0,
                    temperature_c=31.5,
                    cycle_count=120,
                )
            )
        session.add(
            SafetyEvent(
                key=f"test:{serial}:check",
                battery_serial=serial,
                cabinet_id=SH_CABINET,
                slot_no=10,
                reading={"temperature_c": 71.5, "soc": 20.0},
                limits={"max_temperature_c": 60.0},
                verdict="rejected",
                reasons=["too_hot"],
            )
        )
        session.add(
            CustodyEvent(
                key=f"test:{serial}:custody",
                battery_serial=serial,
                from_kind=CustodianKind.SLOT,
                from_ref=f"{SH_CABINET}/3",
                to_kind=CustodianKind.RIDER,
                to_ref=SH_RIDER,
                reason="issued in a swap",
            )
        )

    page = await console.get(f"/console/batteries/{serial}")

    assert page.status_code == 200
    for chart in ("chart-soc", "chart-soh", "chart-voltage_v", "chart-temperature_c"):
        assert f'id="{chart}"' in page.text
    assert "63.25" in page.text  # a reading in the charts' data
    assert "issued in a swap" in page.text and f"{SH_CABINET}/3" in page.text
    assert "rejected" in page.text and "too_hot" in page.text and "max_temperature_c=60.0" in page.text


async def test_an_operator_cannot_open_another_citys_pack(console: httpx.AsyncClient, db: Database) -> None:
    serial = await rider_pack(db, SZ_RIDER)

    page = await console.get(f"/console/batteries/{serial}")

    assert page.status_code == 404


async def rider_pack(db: Database, rider_id: str) -> str:
    async with db.sessions() as session:
        serial = await session.scalar(
            select(Battery.serial).where(
                Battery.custodian_kind == CustodianKind.RIDER, Battery.custodian_ref == rider_id
            )
        )
    assert serial is not None
    return serial


async def until_stage(db: Database, order_id: str, stage: SwapStage) -> None:
    for _ in range(300):
        async with db.sessions() as session:
            order = await session.get(SwapOrder, order_id)
        if order is not None and (order.stage == stage or order.status == SwapStatus.FAILED):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"order {order_id} never reached {stage}")
