"""A swap's history in chromium: a simulated rider swaps at a simulated cabinet of the whole stack; the
swap appears in the operator's search, and its page (live while it runs) shows its stages and its
workflow's history from Temporal with the door commands and the cabinet's door and pack facts. The
screenshot goes to docs/screenshots/swap-history.png."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, expect

from swapflow.db.engine import Database
from swapflow.demo.accounts import DemoTokens
from swapflow.settings import Settings
from swapflow.simulator.cabinet import SimulatedCabinet
from swapflow.simulator.fleet import sim_battery
from swapflow.simulator.riders import SimulatedRider
from tests.browser.conftest import screenshot_path, simulated_stack, stack_settings
from tests.browser.test_console_browser import sign_in
from tests.swap_harness import battery_of

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
    settings = stack_settings(tmp_path_factory, stack_database_url, mqtt_url, console={"live_poll_s": 0.5})
    async with simulated_stack(settings, [CABINET], telemetry_interval_s=1.0) as (running, simulated):
        cabinets.update(simulated)
        yield running


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
