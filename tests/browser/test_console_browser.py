"""The console in chromium: an operator signs in and watches the network map of the simulated
cabinets, the counts follow the network by themselves, a form without its CSRF token is refused, and
another city's cabinet does not exist for them (page and direct URL). Screenshots go to docs/screenshots/."""

from __future__ import annotations

import re
from typing import Any

from playwright.async_api import Page, expect
from sqlalchemy import func, select, update

from swapflow.db.engine import Database
from swapflow.db.network import Cabinet, Slot, Station
from swapflow.db.ops import Alert
from swapflow.demo.accounts import DemoTokens
from swapflow.domain.clock import utcnow
from swapflow.domain.ops import AlertStatus
from tests.browser.conftest import screenshot_path

SH_CABINET = "cab-sh-001-1"
SZ_CABINET = "cab-sz-001-1"


async def sign_in(page: Page, token: str, at: str = "/console/network") -> None:
    """Open `at`, get sent to the sign-in page, and sign in with the keyboard."""
    await page.goto(at)
    await expect(page).to_have_url(re.compile(r"/console/sign-in\?next="))
    await page.get_by_label("API token").fill(token)
    await page.keyboard.press("Enter")
    await expect(page).to_have_url(re.compile(re.escape(at) + "$"))


async def city_counts(db: Database, city: str) -> tuple[int, int]:
    """(stations, cabinets) of a city."""
    async with db.sessions() as session:
        stations = await session.scalar(select(func.count()).select_from(Station).where(Station.city_code == city))
        cabinets = await session.scalar(
            select(func.count()).select_from(Cabinet).join(Station).where(Station.city_code == city)
        )
    return stations or 0, cabinets or 0


async def test_an_operator_signs_in_and_the_map_shows_the_demo_cabinets_online(
    page: Page, tokens: DemoTokens, stack_db: Database
) -> None:
    await sign_in(page, tokens.operators["ops-sh"], "/console/network?city=SH")
    stations, cabinets = await city_counts(stack_db, "SH")
    markers = page.locator(".leaflet-marker-icon")
    await expect(markers).to_have_count(stations)
    # Every simulated cabinet is online: the counts (live) and each marker's name say so in words.
    await expect(page.locator('[data-state="total"]')).to_have_text(str(cabinets))
    await expect(page.locator('[data-state="offline"]')).to_have_text("0", timeout=30_000)
    await page.reload()
    for title in await markers.evaluate_all("els => els.map(e => e.title)"):
        assert re.search(r": (online|no charged pack|alert)$", title), title
    await page.screenshot(path=screenshot_path("network-map"), full_page=True)


async def alerting_cabinets(db: Database, city: str) -> set[str]:
    """The city's cabinets with an open alert: what the map counts as alerting."""
    async with db.sessions() as session:
        return set(
            await session.scalars(
                select(Alert.cabinet_id)
                .join(Cabinet, Cabinet.id == Alert.cabinet_id)
                .join(Station)
                .where(Station.city_code == city, Alert.status == AlertStatus.OPEN)
            )
        )


async def test_the_counts_follow_the_network_without_a_reload(
    page: Page, tokens: DemoTokens, stack_db: Database
) -> None:
    await sign_in(page, tokens.operators["ops-sh"], "/console/network?city=SH")
    # A cabinet with no open alert yet (the stack's evaluator may have raised some, a slow heartbeat's):
    # one more alerting cabinet is then what the count must come to show.
    async with stack_db.sessions() as session:
        cabinets = list(await session.scalars(select(Cabinet.id).join(Station).where(Station.city_code == "SH")))
    calm = sorted(set(cabinets) - await alerting_cabinets(stack_db, "SH"))[0]
    async with stack_db.transaction() as session:
        alert = Alert(
            kind="console_test",
            severity="info",
            dedupe_key=f"console-test/{calm}",
            status=AlertStatus.OPEN,
            cabinet_id=calm,
            message="raised by the console's browser test",
            created_at=utcnow(),
            last_seen_at=utcnow(),
        )
        session.add(alert)
    try:
        shown = page.locator('[data-state="alert"]')
        for _ in range(40):  # the page follows the database by itself, every few seconds
            alerting = await alerting_cabinets(stack_db, "SH")
            if calm in alerting and await shown.inner_text() == str(len(alerting)):
                break
            await page.wait_for_timeout(500)
        await expect(shown).to_have_text(str(len(await alerting_cabinets(stack_db, "SH"))))
    finally:
        async with stack_db.transaction() as session:
            await session.delete(await session.get(Alert, alert.id))


async def test_a_cabinet_page_shows_its_slots_and_timeline(page: Page, tokens: DemoTokens) -> None:
    await sign_in(page, tokens.operators["ops-sh"], f"/console/cabinets/{SH_CABINET}")
    await expect(page.get_by_role("heading", name=re.compile(f"Cabinet {SH_CABINET}"))).to_be_visible()
    await expect(page.locator("#slots tr[data-slot]").first).to_be_visible()
    await expect(page.locator("#presence-chart canvas")).to_have_count(1)
    await page.screenshot(path=screenshot_path("cabinet"), full_page=True)


async def test_a_cabinet_pages_slots_follow_the_cabinet_without_a_reload(
    page: Page, tokens: DemoTokens, stack_db: Database
) -> None:
    await sign_in(page, tokens.operators["ops-sh"], f"/console/cabinets/{SH_CABINET}")
    out_of_service = page.locator('#slots tr[data-slot="12"] td').nth(6)
    await expect(out_of_service).to_have_text("no")
    async with stack_db.transaction() as session:
        await session.execute(
            update(Slot).where(Slot.cabinet_id == SH_CABINET, Slot.slot_no == 12).values(out_of_service="console test")
        )
    try:
        await expect(out_of_service).to_have_text("console test", timeout=10_000)
    finally:
        async with stack_db.transaction() as session:
            await session.execute(
                update(Slot).where(Slot.cabinet_id == SH_CABINET, Slot.slot_no == 12).values(out_of_service=None)
            )


async def test_a_form_posted_without_its_csrf_token_is_refused(page: Page, tokens: DemoTokens) -> None:
    await sign_in(page, tokens.operators["ops-sh"])
    sign_out = page.locator('form[action="/console/sign-out"]')
    await sign_out.locator('input[name="csrf_token"]').evaluate("input => input.remove()")
    async with page.expect_response(lambda r: r.url.endswith("/console/sign-out")) as answered:
        await sign_out.get_by_role("button", name="Sign out").click()
    response: Any = await answered.value
    assert response.status == 403
    await expect(page.get_by_role("heading", level=1)).to_contain_text("403")
    # Still signed in: the refused form changed nothing.
    await page.goto("/console/network")
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()


async def test_an_operator_of_one_city_cannot_open_another_citys_cabinet(page: Page, tokens: DemoTokens) -> None:
    await sign_in(page, tokens.operators["ops-sh"])
    assert await page.locator("#city option").all_inner_texts() == ["SH"]
    response: Any = await page.goto(f"/console/cabinets/{SZ_CABINET}")
    assert response.status == 404
    await expect(page.get_by_role("heading", level=1)).to_contain_text("404")
    table: Any = await page.goto("/console/network/cabinets")
    assert table.status == 200
    assert SZ_CABINET not in await page.content()
    # The same direct URL opens for Shenzhen's operator.
    other = await page.context.browser.new_context(base_url=page.url.split("/console")[0])  # type: ignore[union-attr]
    try:
        theirs = await other.new_page()
        await sign_in(theirs, tokens.operators["ops-sz"], f"/console/cabinets/{SZ_CABINET}")
        await expect(theirs.get_by_role("heading", name=re.compile(f"Cabinet {SZ_CABINET}"))).to_be_visible()
    finally:
        await other.close()
