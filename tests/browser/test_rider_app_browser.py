"""The riders' phone page in chromium, on a phone-sized touch screen sharing its location, against the
whole stack with the cabinet simulated: a rider signs in, finds the cabinet nearest to them, opens it by
its QR link, sees the price, taps "Swap here" and walks the swap while the simulated cabinet acts on the
door commands and the test, as the rider, puts the flat pack in and takes the charged one; each stage
reaches the page by itself. The delay from the cabinet's act (and from the stage recorded in the
database) to the page showing it is measured over a few swaps and printed as p50/p95. A swap with a
pack that is not ours (the simulator's `wrong_pack`) fails, and its page shows the refund. Screenshots
go to SCREENSHOTS (tests/browser/conftest.py)."""

from __future__ import annotations

import asyncio
import math
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from playwright.async_api import BrowserContext, Page, expect
from sqlalchemy import select

from swapflow.db.engine import Database
from swapflow.db.money import Payment
from swapflow.db.network import Battery, Cabinet, Rider, Station
from swapflow.db.swaps import CustodyEvent, SwapOrder
from swapflow.demo.accounts import DemoTokens
from swapflow.domain.network import BatteryStatus, CustodianKind
from swapflow.identity.sms import inbox_messages
from swapflow.settings import Settings
from swapflow.simulator.battery import SimBattery
from swapflow.simulator.cabinet import SimulatedCabinet
from swapflow.simulator.fleet import sim_battery
from tests.browser.conftest import screenshot_path, simulated_stack, stack_settings
from tests.payment_fakes import localstripe_url, stripe_settings_values  # noqa: F401  (a fixture)
from tests.swap_harness import battery_of, new_order

CABINET = "cab-sh-001-1"
RIDER = "rider-sh-0001"
UNLUCKY_RIDER = "rider-sh-0002"
SWAPS = 3
"""Swaps the latency is measured over (four stages each)."""

STAGE_STEP = {
    "return_door_open": "open_return_door",
    "return_verified": "verify_return",
    "charged_door_open": "open_charged_door",
    "completed": "finish",
}
"""A stage the page shows → the swap's step whose time the database records when the stage is reached."""

WATCH_STAGES = """
// Each stage the swap's page shows, with the time it appeared in the page (the browser's clock: this machine's).
window.__stages = [];
const seen = () => {
  const el = document.getElementById("stage");
  if (!el) return;
  const stage = el.dataset.stage, status = el.dataset.status;
  const last = window.__stages[window.__stages.length - 1];
  if (last && last.stage === stage && last.status === status) return;
  window.__stages.push({ stage, status, at: Date.now(), words: el.querySelector(".stage-words").textContent.trim() });
};
new MutationObserver(seen).observe(document, { subtree: true, childList: true, attributes: true });
"""


@pytest.fixture(scope="module")
async def cabinets() -> dict[str, SimulatedCabinet]:
    return {}


@pytest.fixture(scope="module")
async def console_stack(
    stack_database_url: str,
    mqtt_url: str,
    localstripe_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    cabinets: dict[str, SimulatedCabinet],
) -> AsyncIterator[Settings]:
    """The whole stack on the demo network (the phone page's defaults: its live poll included) with the
    rider's cabinet simulated and kept, so the test can act at its doors; cards through localstripe, and
    sign-in codes kept in the development inbox."""
    settings = stack_settings(
        tmp_path_factory,
        stack_database_url,
        mqtt_url,
        stripe=stripe_settings_values(localstripe_url),
        rider_auth={"dev_inbox": True},
    )
    async with simulated_stack(settings, [CABINET], telemetry_interval_s=1.0) as (running, simulated):
        cabinets.update(simulated)
        yield running


@pytest.fixture
async def phone(browser: Any, console_stack: Settings, stack_db: Database) -> AsyncIterator[Page]:
    """A phone-sized touch screen standing at the cabinet's station, sharing its location."""
    async with stack_db.sessions() as session:
        station = await session.scalar(select(Station).join(Cabinet).where(Cabinet.id == CABINET))
    assert station is not None
    context: BrowserContext = await browser.new_context(
        base_url=console_stack.api.effective_url,
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        geolocation={"latitude": station.lat, "longitude": station.lon},
        permissions=["geolocation"],
    )
    await context.add_init_script(WATCH_STAGES)
    page = await context.new_page()
    page.set_default_timeout(20_000)
    yield page
    await context.close()


async def sign_in(page: Page, token: str) -> None:
    await page.goto("/app")
    await expect(page).to_have_url(re.compile(r"/app/sign-in\?next="))
    await page.get_by_text("Sign in with an access token instead").tap()
    await page.get_by_label("Your access token").fill(token)
    await page.keyboard.press("Enter")
    await expect(page).to_have_url(re.compile(r"/app$"))


class DoorWatch:
    """When each door of the simulated cabinet opened on a command: the cabinet's own act, as it happens."""

    def __init__(self, cabinet: SimulatedCabinet) -> None:
        self.cabinet = cabinet
        self.opened: dict[int, list[float]] = {}

    async def run(self) -> None:
        state = {n: self.cabinet.door_open(n) for n in self.cabinet.slots}
        while True:
            for n in self.cabinet.slots:
                now_open = self.cabinet.door_open(n)
                if now_open and not state[n]:
                    self.opened.setdefault(n, []).append(time.time())
                state[n] = now_open
            await asyncio.sleep(0.002)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


async def stage_times(page: Page) -> dict[str, float]:
    """When the page first showed each stage (epoch seconds)."""
    shown = await page.evaluate("window.__stages")
    return {s["stage"]: s["at"] / 1000 for s in reversed(shown)}


async def step_times(db: Database, order_id: str) -> dict[str, float]:
    """When the database recorded each of the swap's steps (epoch seconds)."""
    async with db.sessions() as session:
        order = await session.get(SwapOrder, order_id)
    assert order is not None
    times: dict[str, float] = {}
    for step in order.steps:
        if "at" not in step:  # the charge's step carries no time
            continue
        at = datetime.fromisoformat(step["at"])
        times.setdefault(step["step"], (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp())
    return times


async def swap_once(
    page: Page, cabinet: SimulatedCabinet, pack: SimBattery, doors: DoorWatch
) -> tuple[SimBattery, str, dict[str, float]]:
    """Scan, pay and swap at the cabinet as the rider; returns the charged pack, the swap's id and when the
    cabinet acted for each stage the page shows."""
    await page.goto(f"/app/c/{CABINET}")  # the QR link on the cabinet
    await expect(page.locator(".price-total")).to_have_text(re.compile(r"^\d+\.\d{2} CNY$"))
    await page.get_by_role("button", name="Swap here").tap()
    await expect(page).to_have_url(re.compile(r"/app/swaps/\w+$"))
    order_id = page.url.rsplit("/", 1)[-1]
    words = page.locator(".stage-words")
    await expect(words).to_contain_text(re.compile(r"Door \d+ is open — put your pack in"))
    return_slot = int(re.search(r"Door (\d+)", await words.inner_text()).group(1))  # type: ignore[union-attr]
    acts = {"return_door_open": doors.opened[return_slot][-1]}

    acts["return_verified"] = time.time()
    await cabinet.insert_battery(return_slot, pack, door_close_delay_s=0.3)
    await expect(words).to_contain_text(re.compile(r"Take your charged pack from door \d+"))
    charged_slot = int(re.search(r"door (\d+)", await words.inner_text()).group(1))  # type: ignore[union-attr]
    acts["charged_door_open"] = doors.opened[charged_slot][-1]

    taken = await cabinet.take_battery(charged_slot, door_close_delay_s=0.3)
    acts["completed"] = time.time()  # the door shut as `take_battery` ended
    await expect(words).to_have_text(re.compile(rf"Done — {taken.soc:.0f}% charged"))
    await expect(page.locator(".stage-detail")).to_contain_text(re.compile(r"Paid \d+\.\d{2} CNY"))
    return taken, order_id, acts


async def test_a_rider_finds_scans_pays_and_swaps_and_each_stage_reaches_the_page_by_itself(
    phone: Page,
    tokens: DemoTokens,
    stack_db: Database,
    cabinets: dict[str, SimulatedCabinet],
) -> None:
    cabinet = cabinets[CABINET]
    held = await battery_of(stack_db, RIDER)
    assert held is not None
    pack = sim_battery(held)

    # Find: the page lists the cabinets nearest to the phone, this one first.
    await sign_in(phone, tokens.riders[RIDER])
    await expect(phone.get_by_role("heading", name="Nearest to you")).to_be_visible()
    first = phone.locator("#nearby .card").first
    await expect(first).to_have_attribute("data-cabinet", CABINET)
    await expect(first).to_contain_text(re.compile(r"\d+ ready packs?"))
    await expect(phone.locator(".leaflet-marker-icon.map-cabinet").first).to_be_visible()
    await phone.screenshot(path=screenshot_path("rider-app-nearby"), full_page=True)

    doors = DoorWatch(cabinet)
    watching = asyncio.create_task(doors.run())
    from_act: list[float] = []
    from_db: list[float] = []
    try:
        for n in range(SWAPS):
            pack, order_id, acts = await swap_once(phone, cabinet, pack, doors)
            shown, recorded = await stage_times(phone), await step_times(stack_db, order_id)
            for stage, step in STAGE_STEP.items():
                if stage in shown:  # "Checking your pack" may last less than a poll: then it is not shown
                    from_act.append(shown[stage] - acts[stage])
                    from_db.append(shown[stage] - recorded[step])
            assert {"return_door_open", "charged_door_open", "completed"} <= set(shown), shown
            if n == 0:
                await phone.screenshot(path=screenshot_path("rider-app-done"), full_page=True)
    finally:
        watching.cancel()

    print(
        f"\nphone page, stage shown after the cabinet acted ({len(from_act)} stages over {SWAPS} swaps): "
        f"p50 {percentile(from_act, 0.5) * 1000:.0f} ms, p95 {percentile(from_act, 0.95) * 1000:.0f} ms"
        f"\nphone page, stage shown after the database recorded it: "
        f"p50 {percentile(from_db, 0.5) * 1000:.0f} ms, p95 {percentile(from_db, 0.95) * 1000:.0f} ms"
    )
    # The target is 1 s at p95; the bound here only catches a page that stopped following by itself.
    assert percentile(from_db, 0.95) < 2.0

    await phone.goto(f"/app/c/{CABINET}")
    await phone.screenshot(path=screenshot_path("rider-app-cabinet"), full_page=True)


async def test_a_swap_with_a_pack_that_is_not_ours_fails_and_shows_the_refund(
    phone: Page, tokens: DemoTokens, cabinets: dict[str, SimulatedCabinet]
) -> None:
    cabinet = cabinets[CABINET]
    await sign_in(phone, tokens.riders[UNLUCKY_RIDER])
    await phone.goto(f"/app/c/{CABINET}")
    await phone.get_by_role("button", name="Swap here").tap()
    words = phone.locator(".stage-words")
    await expect(words).to_contain_text(re.compile(r"Door \d+ is open — put your pack in"))
    return_slot = int(re.search(r"Door (\d+)", await words.inner_text()).group(1))  # type: ignore[union-attr]

    stranger = SimBattery(f"FAKE-{uuid.uuid4().hex[:8]}", soc=18.0)
    await cabinet.insert_battery(return_slot, stranger, door_close_delay_s=0.3)

    await expect(words).to_have_text(re.compile(r"Swap failed: that pack is not one of ours"))
    detail = phone.locator(".stage-detail")
    await expect(detail).to_contain_text(re.compile(r"Refund of \d+\.\d{2} CNY to how you paid: "), timeout=30_000)
    await phone.screenshot(path=screenshot_path("rider-app-refund"), full_page=True)


NEW_PHONE = "+8613700002222"


async def texted_code(db: Database, phone: str) -> str:
    for _ in range(50):
        async with db.sessions() as session:
            sent = await inbox_messages(session, phone)
        if sent:
            return re.search(r"\b(\d{6})\b", sent[0].text).group(1)  # type: ignore[union-attr]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no code texted to {phone}")


async def hand_over_a_pack(db: Database, rider_id: str) -> SimBattery:
    """The rider's first pack, handed over at the service point: commissioned into their custody."""
    serial = f"NEW-{uuid.uuid4().hex[:8]}"
    async with db.transaction() as session:
        model = await session.scalar(select(Battery).limit(1))
        assert model is not None
        session.add(
            Battery(
                serial=serial,
                model=model.model,
                chemistry=model.chemistry,
                rated_capacity_mah=model.rated_capacity_mah,
                soc=21.0,
                soh=96.0,
                voltage_v=56.7,
                temperature_c=25.0,
                cycle_count=3,
                status=BatteryStatus.IN_SERVICE,
                custodian_kind=CustodianKind.RIDER,
                custodian_ref=rider_id,
            )
        )
        session.add(
            CustodyEvent(
                key=f"commission:{serial}",
                battery_serial=serial,
                from_kind=CustodianKind.OPS,
                from_ref="warehouse",
                to_kind=CustodianKind.RIDER,
                to_ref=rider_id,
                reason="commissioned",
            )
        )
    return SimBattery(serial, soc=21.0, soh=96.0, cycle_count=3)


async def test_a_new_rider_signs_up_adds_a_card_holds_a_pack_and_swaps_on_it(
    phone: Page, stack_db: Database, cabinets: dict[str, SimulatedCabinet]
) -> None:
    cabinet = cabinets[CABINET]
    # Sign up with a code texted to the phone (the stack keeps texts in its development inbox).
    await phone.goto(f"/app/c/{CABINET}")  # the QR link, before signing in
    await phone.get_by_label("Your phone number").fill(NEW_PHONE)
    await phone.get_by_role("button", name="Text me a code").tap()
    await phone.get_by_label("Code", exact=True).fill(await texted_code(stack_db, NEW_PHONE))
    await phone.get_by_label("Your name").fill("Wen")
    await phone.get_by_label("Your city").select_option("SH")
    await phone.get_by_role("button", name="Sign in").tap()
    await expect(phone).to_have_url(re.compile(rf"/app/c/{CABINET}$"))
    async with stack_db.sessions() as session:
        rider_id = await session.scalar(select(Rider.id).where(Rider.phone == NEW_PHONE))
    assert rider_id is not None
    pack = await hand_over_a_pack(stack_db, rider_id)

    # A card, typed into Stripe's field (localstripe's stand-in) and saved once Stripe says it succeeded.
    await phone.goto("/app/wallet")
    await phone.get_by_role("link", name="Add a card").tap()
    field = phone.locator("#card-element")
    for placeholder, value in (("number", "4242424242424242"), ("exp_month", "12"), ("exp_year", "30")):
        await field.get_by_placeholder(placeholder, exact=True).fill(value)
    await field.get_by_placeholder("cvc", exact=True).fill("123")
    await field.get_by_placeholder("postal_code", exact=True).fill("20000")
    await phone.get_by_role("button", name="Save the card").tap()
    await expect(phone).to_have_url(re.compile(r"/app/wallet$"))
    await expect(phone.locator("#methods")).to_contain_text("Visa ·· 4242 (default)")

    # Hold a charged pack at the cabinet, then swap there on it.
    await phone.goto(f"/app/c/{CABINET}")
    await phone.get_by_role("button", name=re.compile(r"Hold a charged pack")).tap()
    held = phone.locator("#held")
    await expect(held).to_contain_text(re.compile(r"Door \d+'s pack is held for you"))
    held_door = int(re.search(r"Door (\d+)", await held.inner_text()).group(1))  # type: ignore[union-attr]
    await phone.screenshot(path=screenshot_path("rider-app-held"), full_page=True)
    await phone.get_by_role("button", name="Swap here").tap()
    words = phone.locator(".stage-words")
    await expect(words).to_contain_text(re.compile(r"Door \d+ is open — put your pack in"))
    return_slot = int(re.search(r"Door (\d+)", await words.inner_text()).group(1))  # type: ignore[union-attr]
    await cabinet.insert_battery(return_slot, pack, door_close_delay_s=0.3)
    await expect(words).to_contain_text(f"Take your charged pack from door {held_door}")
    taken = await cabinet.take_battery(held_door, door_close_delay_s=0.3)
    await expect(words).to_have_text(re.compile(rf"Done — {taken.soc:.0f}% charged"))
    await expect(phone.locator(".stage-detail")).to_contain_text(re.compile(r"Paid \d+\.\d{2} CNY"))
    async with stack_db.sessions() as session:
        paid = await session.scalar(select(Payment.method).where(Payment.rider_id == rider_id))
    assert paid == "stripe"

    # Another rider's swap does not exist for them.
    answer = await phone.goto(f"/app/swaps/{await new_order(stack_db, RIDER, CABINET)}")
    assert answer is not None and answer.status == 404
