"""The riders' phone page (/app) over HTTP, against the app with a real worker and a simulated cabinet on
the time-skipping server: a rider signs in with their token into a cookie of the page's own (staff may
not), a change without its CSRF token is refused, each page renders, the price re-quotes with a coupon,
a double tap starts one swap whose page says what to do as the cabinet acts, and another rider's swap
does not exist, on the page as over the API."""

from __future__ import annotations

import asyncio
import html
import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import func, select, update
from temporalio.testing import WorkflowEnvironment

from swapflow.console.live import changes
from swapflow.console.session import COOKIE as CONSOLE_COOKIE
from swapflow.db.engine import Database
from swapflow.db.identity import ApiToken
from swapflow.db.money import Payment, Refund, SubscriptionPlan, WalletTopUp
from swapflow.db.network import City, Rider
from swapflow.db.pricing import Coupon as CouponRow
from swapflow.db.swaps import SwapOrder
from swapflow.domain.clock import utcnow
from swapflow.domain.ops import OperatorRole
from swapflow.domain.pricing import Coupon, CouponKind
from swapflow.domain.swaps import SwapStage, SwapStatus
from swapflow.identity.sms import inbox_messages
from swapflow.payments.refunds import charge_key
from swapflow.payments.subscription import subscribe
from swapflow.rider_app.pages.swaps import SwapFollower
from swapflow.rider_app.session import RIDER_COOKIE
from swapflow.settings import Settings
from swapflow.simulator.fleet import sim_battery
from tests.api_harness import app_sharing
from tests.console_harness import csrf_of
from tests.ops_harness import bearer, operator_token, rider_token
from tests.swap_harness import battery_of, new_order, running_cabinet, running_worker

CABINET = "cab-sh-001-1"
RIDER = "rider-sh-0001"
OTHER_RIDER = "rider-sh-0002"
CODE = "TEST10"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.updated(
        swap={"command_ack_timeout_s": 1.5, "return_insert_timeout_s": 20.0, "charged_take_timeout_s": 20.0},
        rider_app={"live_poll_s": 0.05},
        rider_auth={"dev_inbox": True},
    )


@pytest.fixture
async def app_client(
    temporal_env: WorkflowEnvironment, settings: Settings, db: Database
) -> AsyncIterator[httpx.AsyncClient]:
    """The app in the test's event loop (sharing its Temporal client), not signed in."""
    app = app_sharing(settings, db, temporal_env.client)
    # https: the cookie is Secure, and the client sends it back only over https.
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://testserver") as client:
        yield client


def field(page: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert found, f"the page has no {name} field"
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, token: str, next_: str = "/app") -> httpx.Response:
    form = await client.get("/app/sign-in")
    return await client.post("/app/sign-in", data={"token": token, "csrf_token": csrf_of(form.text), "next": next_})


@pytest.fixture
async def rider(app_client: httpx.AsyncClient, db: Database) -> httpx.AsyncClient:
    """The app client, signed in as RIDER."""
    signed_in = await sign_in(app_client, await rider_token(db, RIDER))
    assert signed_in.status_code == 303, signed_in.text
    return app_client


async def finished_order(db: Database, rider_id: str, status: SwapStatus, **values: object) -> str:
    order_id = await new_order(db, rider_id, CABINET)
    async with db.transaction() as session:
        await session.execute(update(SwapOrder).where(SwapOrder.id == order_id).values(status=status, **values))
    return order_id


async def add_coupon(db: Database, **fields: object) -> None:
    spec = Coupon(code=CODE, description="10 % off", kind=CouponKind.PERCENT, value=1000, **fields)
    async with db.transaction() as session:
        session.add(CouponRow(**spec.model_dump(), redeemed_count=0))


async def sh_price(db: Database) -> int:
    async with db.sessions() as session:
        city = await session.get(City, "SH")
    assert city is not None
    return city.swap_price_minor


# ---------------------------------------------------------------------------------- signing in


async def test_a_page_without_a_session_sends_the_browser_to_sign_in(app_client: httpx.AsyncClient) -> None:
    answer = await app_client.get(f"/app/c/{CABINET}")
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/app/sign-in?next=%2Fapp%2Fc%2F{CABINET}"


async def test_signing_in_with_a_riders_token_sets_the_pages_own_cookie(
    app_client: httpx.AsyncClient, db: Database
) -> None:
    token = await rider_token(db, RIDER)
    answer = await sign_in(app_client, token, f"/app/c/{CABINET}")
    assert answer.status_code == 303 and answer.headers["location"] == f"/app/c/{CABINET}"
    cookie = answer.headers["set-cookie"].lower()
    assert cookie.startswith(f"{RIDER_COOKIE.name}=") and RIDER_COOKIE.name != CONSOLE_COOKIE
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" in cookie and "path=/app" in cookie
    assert token not in answer.headers["set-cookie"]
    home = await app_client.get("/app")
    assert home.status_code == 200 and RIDER in home.text


async def test_staff_cannot_sign_in_to_the_riders_page(app_client: httpx.AsyncClient, db: Database) -> None:
    answer = await sign_in(app_client, await operator_token(db, "ops-sh", OperatorRole.OPERATOR, ["SH"]))
    assert answer.status_code == 403 and "This page is for riders" in answer.text
    assert (await app_client.get("/app")).status_code == 303


async def test_an_unknown_token_is_refused(app_client: httpx.AsyncClient) -> None:
    answer = await sign_in(app_client, "not-a-token")
    assert answer.status_code == 401 and "unknown or revoked" in answer.text


async def test_a_console_session_does_not_sign_in_to_the_riders_page(
    app_client: httpx.AsyncClient, db: Database
) -> None:
    form = await app_client.get("/console/sign-in")
    ops = await operator_token(db, "ops-sh", OperatorRole.OPERATOR, ["SH"])
    await app_client.post("/console/sign-in", data={"token": ops, "csrf_token": csrf_of(form.text)})
    console_cookie = app_client.cookies.get(CONSOLE_COOKIE, path="/console")
    assert console_cookie
    # The console's signed cookie under the page's name: the page's key is its own, so it is no session.
    app_client.cookies.set(RIDER_COOKIE.name, console_cookie, domain="testserver", path="/app")
    assert (await app_client.get("/app")).status_code == 303


async def test_a_form_without_its_csrf_token_is_refused(rider: httpx.AsyncClient, db: Database) -> None:
    page = await rider.get(f"/app/c/{CABINET}")
    answer = await rider.post(f"/app/c/{CABINET}/swap", data={"swap_token": field(page.text, "swap_token")})
    assert answer.status_code == 403 and "text/html" in answer.headers["content-type"]
    async with db.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(SwapOrder)) == 0
    refused = await rider.post("/app/sign-out", data={"csrf_token": "forged"})
    assert refused.status_code == 403
    assert (await rider.get("/app")).status_code == 200  # still signed in


async def test_signing_out_ends_the_session(rider: httpx.AsyncClient) -> None:
    wallet = await rider.get("/app/wallet")
    answer = await rider.post("/app/sign-out", data={"csrf_token": csrf_of(wallet.text)})
    assert answer.status_code == 303
    assert (await rider.get("/app/wallet")).status_code == 303


# ---------------------------------------------------------------------------------- cabinets


async def test_the_home_page_lists_the_riders_citys_cabinets_with_their_ready_packs(rider: httpx.AsyncClient) -> None:
    page = await rider.get("/app")
    assert page.status_code == 200
    assert f'href="/app/c/{CABINET}"' in page.text and "cab-sz-" not in page.text
    assert re.search(r"<strong>\d+</strong> ready packs?", page.text)
    assert 'id="map"' in page.text and "/app/vendor/leaflet/leaflet.js" in page.text
    assert "Distances from the city centre" in page.text


async def test_the_list_around_the_phone_says_how_far_each_cabinet_is(rider: httpx.AsyncClient) -> None:
    listed = await rider.get("/app/nearby", params={"near": "31.2304,121.4737"})
    assert listed.status_code == 200 and "Nearest to you" in listed.text
    assert re.search(r'class="distance">\d+(\.\d)? (m|km)<', listed.text)
    assert (await rider.get("/app/nearby", params={"near": "north pole"})).status_code == 422


async def test_the_vendored_libraries_are_served_under_the_page(app_client: httpx.AsyncClient) -> None:
    for path in ("vendor/htmx/htmx.min.js", "vendor/htmx-ext-sse/sse.min.js", "vendor/leaflet/leaflet.js"):
        assert (await app_client.get(f"/app/{path}")).status_code == 200, path
    assert (await app_client.get("/app/static/app.js")).status_code == 200


async def test_typing_a_cabinets_code_opens_its_page(rider: httpx.AsyncClient) -> None:
    answer = await rider.get("/app/c", params={"code": f"  {CABINET.upper()} "})
    assert answer.status_code == 303 and answer.headers["location"] == f"/app/c/{CABINET}"
    unknown = await rider.get("/app/c", params={"code": "cab-nowhere"})
    assert unknown.status_code == 404 and "no cabinet has the code" in unknown.text


async def test_a_cabinets_page_shows_its_ready_packs_and_the_price(rider: httpx.AsyncClient, db: Database) -> None:
    page = await rider.get(f"/app/c/{CABINET}")
    assert page.status_code == 200
    assert re.search(r"\d+ ready packs?</h2>", page.text)
    assert re.search(r"Door \d+: <strong>\d+%</strong> charged", page.text)
    price = await sh_price(db)
    assert f'<span class="price-total">{price // 100}.{price % 100:02d} CNY</span>' in page.text
    assert "Swap here" in page.text and "{% block reserve %}" not in page.text
    assert (await rider.get("/app/c/cab-nowhere")).status_code == 404


async def test_a_coupon_re_quotes_the_price_and_goes_with_the_swap(rider: httpx.AsyncClient, db: Database) -> None:
    await add_coupon(db)
    price = await sh_price(db)
    quote = await rider.get(
        f"/app/c/{CABINET}/quote", params={"coupon_code": CODE.lower()}, headers={"HX-Request": "true"}
    )
    assert quote.status_code == 200
    discounted = price - (price * 1000 + 5000) // 10000
    assert f"{discounted // 100}.{discounted % 100:02d} CNY" in quote.text and f"with coupon {CODE}" in quote.text
    assert f'name="coupon_code" value="{CODE}" form="swap-form"' in quote.text


async def test_a_coupon_that_cannot_be_used_says_why_and_leaves_the_price(
    rider: httpx.AsyncClient, db: Database
) -> None:
    await add_coupon(db, valid_until=datetime(2020, 1, 1, tzinfo=UTC))
    price = await sh_price(db)
    quote = await rider.get(f"/app/c/{CABINET}/quote", params={"coupon_code": CODE})
    assert f"Coupon {CODE} not applied: the coupon has expired." in quote.text
    assert f"{price // 100}.{price % 100:02d} CNY" in quote.text
    assert 'name="coupon_code" value="" form="swap-form"' in quote.text


async def test_a_swap_with_a_refused_coupon_is_not_started(rider: httpx.AsyncClient, db: Database) -> None:
    await add_coupon(db, valid_until=datetime(2020, 1, 1, tzinfo=UTC))
    page = await rider.get(f"/app/c/{CABINET}")
    answer = await rider.post(
        f"/app/c/{CABINET}/swap",
        data={"csrf_token": csrf_of(page.text), "swap_token": field(page.text, "swap_token"), "coupon_code": CODE},
    )
    assert answer.status_code == 422 and "Your coupon cannot be used: the coupon has expired." in answer.text
    async with db.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(SwapOrder)) == 0


# ---------------------------------------------------------------------------------- swapping


async def until_stage(db: Database, order_id: str, *stages: SwapStage, timeout_s: float = 20) -> SwapOrder:
    for _ in range(int(timeout_s / 0.05)):
        async with db.sessions() as session:
            order = await session.get(SwapOrder, order_id)
        if order is not None and order.stage in stages:
            return order
        await asyncio.sleep(0.05)
    raise AssertionError(f"swap {order_id} never reached {stages}")


async def test_a_double_tap_starts_one_swap_whose_page_says_what_to_do_until_done(
    temporal_env: WorkflowEnvironment, rider: httpx.AsyncClient, settings: Settings, db: Database
) -> None:
    held = await battery_of(db, RIDER)
    assert held is not None
    async with (
        running_worker(temporal_env.client, settings, db),
        running_cabinet(temporal_env.client, settings, db, CABINET) as cabinet,
    ):
        with temporal_env.auto_time_skipping_disabled():
            page = await rider.get(f"/app/c/{CABINET}")
            form = {"csrf_token": csrf_of(page.text), "swap_token": field(page.text, "swap_token")}
            first, second = await asyncio.gather(
                rider.post(f"/app/c/{CABINET}/swap", data=form), rider.post(f"/app/c/{CABINET}/swap", data=form)
            )
            assert first.status_code == second.status_code == 303
            assert first.headers["location"] == second.headers["location"]
            async with db.sessions() as session:
                assert await session.scalar(select(func.count()).select_from(SwapOrder)) == 1
            order_id = first.headers["location"].rsplit("/", 1)[-1]

            shown = (await rider.get(first.headers["location"])).text
            order = await until_stage(db, order_id, SwapStage.RETURN_DOOR_OPEN)
            assert f"Door {order.return_slot_no} is open — put your pack in" in shown
            assert f'sse-connect="/app/swaps/{order_id}/live"' in shown and 'sse-close="end"' in shown

            await cabinet.insert_battery(order.return_slot_no or 0, sim_battery(held), door_close_delay_s=0.1)
            order = await until_stage(db, order_id, SwapStage.CHARGED_DOOR_OPEN)
            shown = (await rider.get(first.headers["location"])).text
            assert f"Take your charged pack from door {order.charged_slot_no}" in shown

            taken = await cabinet.take_battery(order.charged_slot_no or 0, door_close_delay_s=0.1)
            await until_stage(db, order_id, SwapStage.COMPLETED)
            stream = await rider.get(f"/app/swaps/{order_id}/live")

    assert re.findall(r"^event: (\w+)$", stream.text, flags=re.MULTILINE) == ["stage", "end"]
    assert f"Done — {taken.soc:.0f}% charged" in stream.text
    history = await rider.get("/app/swaps")
    assert f'href="/app/swaps/{order_id}"' in history.text and "✓ Done" in history.text


async def test_the_live_page_sends_the_stage_again_when_the_cabinet_acts(db: Database) -> None:
    order_id = await new_order(db, RIDER, CABINET)
    async with db.transaction() as session:
        await session.execute(
            update(SwapOrder)
            .where(SwapOrder.id == order_id)
            .values(stage=SwapStage.RETURN_DOOR_OPEN, return_slot_no=7, charged_slot_no=3)
        )
    follower = SwapFollower(db, RIDER, order_id)

    async def gone() -> bool:
        return follower.over

    events = changes("stage", follower.render, poll_s=0.01, max_s=10, gone=gone)
    first = await anext(events)
    assert first.startswith("event: stage\n") and "Door 7 is open — put your pack in" in first
    assert await anext(events) == ": still here\n\n"  # nothing changed: nothing sent
    async with db.transaction() as session:
        await session.execute(update(SwapOrder).where(SwapOrder.id == order_id).values(stage=SwapStage.RETURN_VERIFIED))
    assert "Checking your pack" in await anext(events)
    async with db.transaction() as session:
        await session.execute(
            update(SwapOrder).where(SwapOrder.id == order_id).values(stage=SwapStage.CHARGED_DOOR_OPEN)
        )
    assert "Take your charged pack from door 3" in await anext(events)
    async with db.transaction() as session:
        await session.execute(
            update(SwapOrder)
            .where(SwapOrder.id == order_id)
            .values(stage=SwapStage.FAILED, status=SwapStatus.FAILED, failure_reason="charged_battery_not_taken")
        )
    assert "Swap failed: the charged pack was not taken" in await anext(events)
    assert [chunk async for chunk in events] == []  # nothing was charged: nothing left to follow


async def test_a_failed_swap_shows_why_and_where_its_refund_is(rider: httpx.AsyncClient, db: Database) -> None:
    order_id = await finished_order(
        db,
        RIDER,
        SwapStatus.FAILED,
        stage=SwapStage.FAILED,
        failure_reason="battery_not_returned_in_time",
        price_minor=550,
        currency="CNY",
        payment_ref="pay-1",
        refund_ref=f"swap-{uuid.uuid4().hex[:8]}",
    )
    async with db.transaction() as session:
        order = await session.get(SwapOrder, order_id)
        assert order is not None and order.refund_ref
        session.add(
            Refund(
                id=order.refund_ref,
                key=f"refund:{order.refund_ref}",
                payment_key=f"swap:{order_id}:charge",
                order_id=order_id,
                rider_id=RIDER,
                method="sandbox",
                amount_minor=550,
                currency="CNY",
                reason="battery_not_returned_in_time",
                origin="swap_compensation",
                status="processing",
                expected_by=datetime(2031, 3, 4, tzinfo=UTC),
            )
        )

    page = await rider.get(f"/app/swaps/{order_id}")

    assert page.status_code == 200
    assert "Swap failed: your pack was not put in in time" in page.text
    assert "Refund of 5.50 CNY to how you paid: on its way. Expected by 04 Mar 2031." in page.text
    assert 'data-refund-status="processing"' in page.text
    assert 'sse-connect="' in page.text  # the refund is followed until it is done
    async with db.transaction() as session:
        await session.execute(update(Refund).where(Refund.order_id == order_id).values(status="succeeded"))
    page = await rider.get(f"/app/swaps/{order_id}")
    assert "Refund of 5.50 CNY to how you paid: done." in page.text and 'sse-connect="' not in page.text


async def test_a_failed_swap_that_took_no_money_says_so(rider: httpx.AsyncClient, db: Database) -> None:
    order_id = await finished_order(
        db, RIDER, SwapStatus.FAILED, stage=SwapStage.FAILED, failure_reason="no_charged_battery"
    )
    page = await rider.get(f"/app/swaps/{order_id}")
    assert "Swap failed: the cabinet has no charged pack for you" in page.text and "You were not charged." in page.text


async def test_another_riders_swap_is_not_found_on_the_page_its_stream_and_the_api(
    rider: httpx.AsyncClient, db: Database
) -> None:
    theirs = await finished_order(db, OTHER_RIDER, SwapStatus.COMPLETED, stage=SwapStage.COMPLETED)
    mine = await finished_order(db, RIDER, SwapStatus.COMPLETED, stage=SwapStage.COMPLETED)

    page = await rider.get(f"/app/swaps/{theirs}")
    assert page.status_code == 404 and "text/html" in page.headers["content-type"]
    assert (await rider.get(f"/app/swaps/{theirs}/live")).status_code == 404
    api = await rider.get(f"/v1/swaps/{theirs}", headers=bearer(await rider_token(db, RIDER)))
    assert api.status_code == 404
    history = (await rider.get("/app/swaps")).text
    assert mine in history and theirs not in history


# ---------------------------------------------------------------------------------- wallet and plan


async def test_the_wallet_page_shows_the_balance_and_offers_top_ups(rider: httpx.AsyncClient, db: Database) -> None:
    price = await sh_price(db)
    page = await rider.get("/app/wallet")
    assert page.status_code == 200
    assert 'data-balance="0"' in page.text
    assert f'name="amount_minor" value="{price * 5}"' in page.text
    assert "You have no plan" in page.text


async def test_the_wallet_page_shows_the_riders_plan_and_swaps_left(rider: httpx.AsyncClient, db: Database) -> None:
    async with db.transaction() as session:
        plan = await session.get(SubscriptionPlan, "plan-sh-60")
        assert plan is not None
        await subscribe(session, rider_id=RIDER, plan=plan, started_at=utcnow() - timedelta(days=1))
    page = await rider.get("/app/wallet")
    assert plan.name in page.text and "60 of 60 swaps left until" in page.text


async def test_a_double_tapped_top_up_opens_one_top_up(
    temporal_env: WorkflowEnvironment, rider: httpx.AsyncClient, settings: Settings, db: Database
) -> None:
    price = await sh_price(db)
    async with running_worker(temporal_env.client, settings, db):
        page = await rider.get("/app/wallet")
        form = {
            "csrf_token": csrf_of(page.text),
            "top_up_token": field(page.text, "top_up_token"),
            "amount_minor": str(price * 10),
        }
        first, second = await asyncio.gather(
            rider.post("/app/wallet/top-ups", data=form), rider.post("/app/wallet/top-ups", data=form)
        )
        assert first.status_code == second.status_code == 303
        async with db.sessions() as session:
            top_ups = list(await session.scalars(select(WalletTopUp).where(WalletTopUp.rider_id == RIDER)))
        assert [t.amount_minor for t in top_ups] == [price * 10]
        shown = (await rider.get("/app/wallet")).text
        assert f'data-top-up="{top_ups[0].id}"' in shown


# ---------------------------------------------------------------------------------- phone codes

NEW_PHONE = "+8613900001111"


async def texted_code(db: Database, phone: str) -> str:
    async with db.sessions() as session:
        latest = (await inbox_messages(session, phone))[0]
    found = re.search(r"\b(\d{6})\b", latest.text)
    assert found, latest.text
    return found.group(1)


async def test_a_new_phone_signs_up_with_the_texted_code_and_its_city(
    app_client: httpx.AsyncClient, db: Database
) -> None:
    form = await app_client.get("/app/sign-in")
    asked = await app_client.post("/app/sign-in/code", data={"phone": NEW_PHONE, "csrf_token": csrf_of(form.text)})
    assert asked.status_code == 200 and "We texted a code" in asked.text
    answer = await app_client.post(
        "/app/sign-in/phone",
        data={
            "phone": NEW_PHONE,
            "code": await texted_code(db, NEW_PHONE),
            "name": "Wen",
            "city_code": "SH",
            "csrf_token": csrf_of(asked.text),
        },
    )
    assert answer.status_code == 303, answer.text
    async with db.sessions() as session:
        rider = await session.scalar(select(Rider).where(Rider.phone == NEW_PHONE))
    assert rider is not None and rider.city_code == "SH" and rider.name == "Wen"
    assert (await app_client.get("/app")).status_code == 200


async def test_a_wrong_code_keeps_the_rider_on_the_code_form_saying_so(
    app_client: httpx.AsyncClient, db: Database
) -> None:
    form = await app_client.get("/app/sign-in")
    asked = await app_client.post("/app/sign-in/code", data={"phone": NEW_PHONE, "csrf_token": csrf_of(form.text)})
    wrong = "000000" if await texted_code(db, NEW_PHONE) != "000000" else "111111"
    answer = await app_client.post(
        "/app/sign-in/phone",
        data={"phone": NEW_PHONE, "code": wrong, "city_code": "SH", "csrf_token": csrf_of(asked.text)},
    )
    assert answer.status_code == 422 and "wrong code" in answer.text
    assert (await app_client.get("/app")).status_code == 303


async def test_signing_out_revokes_the_phone_codes_token(app_client: httpx.AsyncClient, db: Database) -> None:
    form = await app_client.get("/app/sign-in")
    asked = await app_client.post("/app/sign-in/code", data={"phone": NEW_PHONE, "csrf_token": csrf_of(form.text)})
    code = await texted_code(db, NEW_PHONE)
    data = {"phone": NEW_PHONE, "code": code, "city_code": "SH", "csrf_token": csrf_of(asked.text)}
    assert (await app_client.post("/app/sign-in/phone", data=data)).status_code == 303
    wallet = await app_client.get("/app/wallet")
    await app_client.post("/app/sign-out", data={"csrf_token": csrf_of(wallet.text)})
    async with db.sessions() as session:
        rider_id = await session.scalar(select(Rider.id).where(Rider.phone == NEW_PHONE))
        tokens = list(await session.scalars(select(ApiToken).where(ApiToken.principal_id == rider_id)))
    assert tokens and all(token.revoked_at is not None for token in tokens)


async def test_a_swap_waiting_for_wechat_pay_offers_its_pay_sheet(rider: httpx.AsyncClient, db: Database) -> None:
    order_id = await new_order(db, RIDER, CABINET)
    params = {"appId": "wx-app", "timeStamp": "1", "nonceStr": "n", "package": "prepay_id=wx1", "signType": "RSA"}
    async with db.transaction() as session:
        await session.execute(update(SwapOrder).where(SwapOrder.id == order_id).values(price_minor=600, currency="CNY"))
        session.add(
            Payment(
                key=charge_key(order_id),
                order_id=order_id,
                rider_id=RIDER,
                method="wechat",
                amount_minor=600,
                currency="CNY",
                status="pending",
                client_params=params,
            )
        )
    page = await rider.get(f"/app/swaps/{order_id}")
    assert "Pay 6.00 CNY with WeChat Pay" in page.text
    sheet = re.search(r'data-pay-sheet="([^"]+)"', page.text)
    assert sheet and json.loads(html.unescape(sheet.group(1))) == params
