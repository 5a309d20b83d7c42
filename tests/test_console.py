"""The console over plain HTTP: signing in with an account's token gives a signed, HttpOnly,
SameSite=Lax session cookie; a change without its CSRF token is refused; pages answer the API's
scoping (another city's cabinet does not exist)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from swapflow.console import live
from swapflow.console.live import changes
from swapflow.console.session import COOKIE
from swapflow.db.engine import Database
from swapflow.db.network import Cabinet
from swapflow.domain.ops import OperatorRole
from swapflow.settings import Settings
from tests.console_harness import console_client, csrf_of, sign_in
from tests.ops_harness import operator_token, rider_token

SH_CABINET = "cab-sh-001-1"
SZ_CABINET = "cab-sz-001-1"


@pytest.fixture
def console(settings: Settings) -> Iterator[TestClient]:
    with console_client(settings) as client:
        yield client


@pytest.fixture
async def ops_sh(db: Database) -> str:
    return await operator_token(db, "ops-sh", OperatorRole.OPERATOR, ["SH"])


def test_a_page_without_a_session_sends_the_browser_to_sign_in(console: TestClient) -> None:
    answer = console.get("/console/network?city=SH")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/sign-in?next=%2Fconsole%2Fnetwork%3Fcity%3DSH"


def test_an_htmx_request_without_a_session_is_told_where_to_sign_in(console: TestClient) -> None:
    answer = console.get("/console/network", headers={"HX-Request": "true"})
    assert answer.status_code == 401
    assert answer.headers["HX-Redirect"].startswith("/console/sign-in?next=")


def test_signing_in_sets_a_signed_httponly_samesite_cookie(console: TestClient, ops_sh: str) -> None:
    form = console.get("/console/sign-in")
    answer = console.post(
        "/console/sign-in",
        data={"token": ops_sh, "csrf_token": csrf_of(form.text), "next": "/console/network?city=SH"},
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/network?city=SH"
    cookie = answer.headers["set-cookie"].lower()
    assert cookie.startswith(f"{COOKIE}=")
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" in cookie and "path=/console" in cookie
    assert ops_sh not in answer.headers["set-cookie"]


def test_a_signed_in_operator_sees_the_layout(console: TestClient, ops_sh: str) -> None:
    sign_in(console, ops_sh)
    page = console.get("/console/network")
    assert page.status_code == 200
    assert "ops-sh" in page.text and "Sign out" in page.text
    assert 'hx-headers=\'{"X-CSRF-Token": "' in page.text


def test_an_unknown_token_does_not_sign_in(console: TestClient) -> None:
    form = console.get("/console/sign-in")
    answer = console.post("/console/sign-in", data={"token": "nope", "csrf_token": csrf_of(form.text)})
    assert answer.status_code == 401
    assert "unknown" in answer.text
    assert console.get("/console/network").status_code == 303


async def test_a_rider_may_not_sign_in(console: TestClient, db: Database) -> None:
    token = await rider_token(db, "rider-sh-0001")
    form = console.get("/console/sign-in")
    answer = console.post("/console/sign-in", data={"token": token, "csrf_token": csrf_of(form.text)})
    assert answer.status_code == 403


def test_signing_in_without_the_csrf_token_is_refused(console: TestClient, ops_sh: str) -> None:
    console.get("/console/sign-in")
    answer = console.post("/console/sign-in", data={"token": ops_sh})
    assert answer.status_code == 403
    assert "CSRF" in answer.text


def test_a_form_posted_with_a_wrong_csrf_token_is_refused(console: TestClient, ops_sh: str) -> None:
    sign_in(console, ops_sh)
    answer = console.post("/console/sign-out", data={"csrf_token": "forged"})
    assert answer.status_code == 403
    assert console.get("/console/network").status_code == 200


def test_an_htmx_request_carries_the_token_in_a_header(console: TestClient, ops_sh: str) -> None:
    sign_in(console, ops_sh)
    token = csrf_of(console.get("/console/network").text)
    assert console.post("/console/sign-out", headers={"X-CSRF-Token": token}).status_code == 303


def test_signing_out_ends_the_session(console: TestClient, ops_sh: str) -> None:
    sign_in(console, ops_sh)
    token = csrf_of(console.get("/console/network").text)
    answer = console.post("/console/sign-out", data={"csrf_token": token})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/sign-in"
    assert console.get("/console/network").status_code == 303


def test_a_forged_cookie_is_no_session(console: TestClient, ops_sh: str) -> None:
    sign_in(console, ops_sh)
    value = console.cookies[COOKIE]
    console.cookies.clear()
    console.cookies.set(COOKIE, value[:-2] + ("AA" if not value.endswith("AA") else "BB"), path="/console")
    assert console.get("/console/network").status_code == 303


def test_sign_in_sends_back_only_to_console_pages(console: TestClient, ops_sh: str) -> None:
    form = console.get("/console/sign-in")
    answer = console.post(
        "/console/sign-in", data={"token": ops_sh, "csrf_token": csrf_of(form.text), "next": "//evil.example/"}
    )
    assert answer.headers["location"] == "/console/network"


def test_the_api_still_answers_problem_documents(console: TestClient) -> None:
    answer = console.get("/v1/cabinets/nope")
    assert answer.headers["content-type"].startswith("application/problem+json")


def test_the_network_page_counts_a_citys_cabinets_by_state(console: TestClient, ops_sh: str) -> None:
    sign_in(console, ops_sh)
    page = console.get("/console/network?city=SH")
    assert page.status_code == 200
    assert re.search(r'data-state="total">(\d+)<', page.text)
    assert "no charged pack" in page.text and 'id="map"' in page.text
    assert '"id": "st-sh-001"' in page.text and "st-sz-" not in page.text


def test_the_network_page_of_a_city_not_granted_is_refused(console: TestClient, ops_sh: str) -> None:
    sign_in(console, ops_sh)
    assert console.get("/console/network?city=SZ").status_code == 403


async def test_the_cabinet_table_filters_by_state(console: TestClient, ops_sh: str, db: Database) -> None:
    async with db.transaction() as session:
        await session.execute(update(Cabinet).where(Cabinet.id == SH_CABINET).values(online=False))
    sign_in(console, ops_sh)
    offline = console.get("/console/network/cabinets?city=SH&state=offline")
    assert offline.status_code == 200 and SH_CABINET in offline.text
    online = console.get("/console/network/cabinets?city=SH&state=online")
    assert SH_CABINET not in online.text


def test_the_cabinet_table_lists_one_stations_cabinets(console: TestClient, ops_sh: str) -> None:
    sign_in(console, ops_sh)
    page = console.get("/console/network/cabinets?city=SH&station=st-sh-001")
    assert page.status_code == 200
    assert set(re.findall(r'href="/console/cabinets/([^"]+)"', page.text)) == {SH_CABINET}


def test_the_table_filter_form_sent_with_any_city_and_any_state_lists_all(console: TestClient, ops_sh: str) -> None:
    sign_in(console, ops_sh)
    page = console.get("/console/network/cabinets?city=&state=")
    assert page.status_code == 200 and SH_CABINET in page.text


def test_the_cabinet_table_pages(console: TestClient, ops_sh: str) -> None:
    sign_in(console, ops_sh)
    page = console.get("/console/network/cabinets?page=2")
    assert page.status_code == 200
    assert "Page 2" in page.text


def test_a_cabinet_page_shows_its_slots(console: TestClient, ops_sh: str) -> None:
    sign_in(console, ops_sh)
    page = console.get(f"/console/cabinets/{SH_CABINET}")
    assert page.status_code == 200
    assert 'data-slot="1"' in page.text and "presence-chart" in page.text


def test_an_operator_cannot_open_another_citys_cabinet(console: TestClient, ops_sh: str) -> None:
    sign_in(console, ops_sh)
    page = console.get(f"/console/cabinets/{SZ_CABINET}")
    assert page.status_code == 404
    assert "text/html" in page.headers["content-type"]
    assert console.get(f"/console/live/cabinets/{SZ_CABINET}").status_code == 404


async def test_live_counts_are_sent_again_when_they_change(settings: Settings, db: Database) -> None:
    async with db.transaction() as session:
        await session.execute(update(Cabinet).values(online=False))
    flips = iter([False, False, True])

    async def gone() -> bool:
        return next(flips)

    events = changes("counts", live.network_counts(db, settings, "SH"), poll_s=0.01, max_s=10, gone=gone)
    first = await anext(events)
    assert first.startswith("event: counts\n") and 'data-state="online">0<' in first
    async with db.transaction() as session:
        await session.execute(update(Cabinet).where(Cabinet.id == SH_CABINET).values(online=True))
    second = await anext(events)
    assert 'data-state="offline">' in second and second != first
    assert [chunk async for chunk in events] == []


def test_the_vendored_libraries_are_served_from_the_console(console: TestClient) -> None:
    for path in (
        "vendor/htmx/htmx.min.js",
        "vendor/htmx-ext-sse/sse.min.js",
        "vendor/uplot/uPlot.iife.min.js",
        "vendor/leaflet/leaflet.js",
    ):
        assert console.get(f"/console/static/{path}").status_code == 200, path


def test_the_map_uses_the_tile_server_set(settings: Settings, ops_sh: str) -> None:
    tiles = "https://tiles.internal/{z}/{x}/{y}.png"
    with console_client(settings.updated(console={"tile_url": tiles})) as client:
        sign_in(client, ops_sh)
        assert tiles in client.get("/console/network").text


def test_without_a_tile_server_the_map_fetches_no_tiles(console: TestClient, ops_sh: str) -> None:
    sign_in(console, ops_sh)
    assert '"tile_url": null' in console.get("/console/network").text
