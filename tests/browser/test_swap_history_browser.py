"""A swap's history in chromium: a simulated rider swaps at a simulated cabinet of the whole stack; the
swap appears in the operator's search, and its page (live while it runs) shows its stages and its
workflow's history from Temporal with the door commands and the cabinet's door and pack facts. The
screenshot goes to docs/screenshots/swap-history.png."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import suppress
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, expect

from swapflow.db.engine import Database
from swapflow.demo.accounts import DemoTokens
from swapflow.settings import Settings
from swapflow.simulator.cabinet import SimulatedCabinet
from swapflow.simulator.fleet import build_cabinets, sim_battery
from swapflow.simulator.riders import SimulatedRider
from tests.browser.conftest import screenshot_path
from tests.browser.test_console_browser import sign_in
from tests.swap_harness import battery_of
from tests.test_end_to_end import whole_stack

CABINET = "cab-sh-001-1"
RIDER = "rider-sh-0001"


@pytest.fixture(scope="module")
async def cabinets() -> dict[str, SimulatedCabinet]:
    return {}


@pytest.fixture(scope="module")
async def console_stack(
    stack_database_url: str,
    mqtt_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    cabinets: dict[str, SimulatedCabinet],
) -> AsyncIterator[Settings]:
    """The whole stack on the demo network with the one cabinet the rider swaps at simulated (kept, so the
    rider can act at its doors)."""
    run = uuid.uuid4().hex[:10]
    settings = Settings().updated(
        data_dir=tmp_path_factory.mktemp("console-data"),
        database_url=stack_database_url,
        mqtt={"url": mqtt_url, "topic_prefix": f"swapflow-test-{run}/v1"},
        temporal={"task_queue": f"swapflow-test-{run}"},
        adapter={"client_id": f"swapflow-test-adapter-{run}"},
        console={"live_poll_s": 0.5},
    )
    async with whole_stack(settings) as running:
        db = Database(running.settings.effective_database_url)
        cabinets.update(await build_cabinets(running.settings, db, cabinet_ids=[CABINET], telemetry_interval_s=1.0))
        task = asyncio.create_task(cabinets[CABINET].run())
        try:
            await asyncio.wait_for(cabinets[CABINET].ready.wait(), 30)
            yield running.settings
        finally:
            task.cancel()
            with suppress(Exception):
                await asyncio.gather(task, return_exceptions=True)
            await db.dispose()


async def rider_swaps(
    settings: Settings, db: Database, tokens: DemoTokens, cabinets: dict[str, SimulatedCabinet]
) -> Any:
    held = await battery_of(db, RIDER)
    assert held is not None
    async with httpx.AsyncClient(base_url=settings.api.effective_url, timeout=30) as http:
        for _ in range(100):  # the adapter marks the cabinet online from its birth message
            listed = (await http.get(f"/v1/cabinets/{CABINET}")).json()
            if listed["online"]:
                break
            await asyncio.sleep(0.1)
        rider = SimulatedRider(
            settings.api.effective_url,
            RIDER,
            sim_battery(held),
            listed["lat"],
            listed["lon"],
            cabinets,
            http,
            swap_timeout_s=60,
            token=tokens.riders[RIDER],
        )
        return await rider.swap_once()


async def test_a_riders_swap_appears_and_its_page_shows_its_workflow_history(
    page: Page,
    console_stack: Settings,
    stack_db: Database,
    tokens: DemoTokens,
    cabinets: dict[str, SimulatedCabinet],
) -> None:
    await sign_in(page, tokens.operators["ops-sh"], f"/console/swaps?cabinet_id={CABINET}")
    swap = await rider_swaps(console_stack, stack_db, tokens, cabinets)
    assert swap is not None and swap["status"] == "completed", swap

    await page.get_by_role("button", name="Search").click()
    link = page.get_by_role("link", name=swap["id"])
    await expect(link).to_be_visible()
    await link.click()

    await expect(page.get_by_role("heading", name=f"Swap {swap['id']}")).to_be_visible()
    history = page.get_by_role("region", name=re.compile(r"Workflow history of swap"))
    await expect(history).to_contain_text("completed")
    commands = page.locator("table").filter(has_text="Round trip")
    await expect(commands).to_contain_text("open_door")
    timeline = history.locator("table.timeline")
    await expect(timeline.locator("tr", has_text="send_device_command")).to_have_count(2)
    for slot in (swap["return_slot_no"], swap["charged_slot_no"]):
        await expect(timeline.locator("tr", has_text=f"open_door slot {slot} (")).to_have_count(1)
    for fact in ("kind=battery_inserted", "kind=door_closed", "kind=battery_removed"):
        await expect(timeline.locator("tr.entry-signal", has_text=fact).first).to_be_visible()
    ui = history.get_by_role("link", name="open in the Temporal UI")
    assert re.search(r"/namespaces/default/workflows/swap%2F", await ui.get_attribute("href") or "")
    await page.screenshot(path=screenshot_path("swap-history"), full_page=True)
