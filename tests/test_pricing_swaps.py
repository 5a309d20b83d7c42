"""Prices on real swaps: the API quotes and checks coupons before a swap starts; admission prices the
swap as of the rider's request, redeems the coupon and records the breakdown; the charge is the
discounted price; a failed swap gives its coupon back. Real database, broker, worker and cabinet, on
the time-skipping server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from swapflow.activities.swap import SwapRecords
from swapflow.api.app import create_app
from swapflow.db.engine import Database, create_sync_engine
from swapflow.db.migrate import upgrade
from swapflow.db.money import Payment, Refund, SandboxPayment
from swapflow.db.pricing import Coupon as CouponRow
from swapflow.db.pricing import CouponRedemption, PriceRule
from swapflow.db.swaps import SwapOrder
from swapflow.demo.network import seed_demo_network
from swapflow.domain.pricing import Coupon, CouponKind
from swapflow.domain.swaps import SwapStage, SwapStatus
from swapflow.ops.invariants import check_invariants
from swapflow.services.pricing import price_swap
from swapflow.services.swaps import swap_request
from swapflow.settings import Settings
from swapflow.workflows.swap import SwapWorkflow
from swapflow.workflows.swap_contract import SwapProgress, swap_workflow_id
from tests.ops_harness import admin_headers
from tests.swap_harness import running_cabinet, running_worker, set_online
from tests.test_swap_saga import Scene, count

CABINET = "cab-sh-001-1"
RIDER = "rider-sh-0001"
NOON_ISH = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)  # 11:00 in Shanghai: no peak, no night
CODE = "TEST10"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Short bounds: device waits run in real time in these tests (the cabinet is real)."""
    return settings.updated(
        swap={
            "command_ack_timeout_s": 1.5,
            "return_insert_timeout_s": 20.0,
            "charged_take_timeout_s": 20.0,
            "offline_grace_s": 20.0,
        }
    )


@pytest.fixture
async def scene(temporal_env: WorkflowEnvironment, settings: Settings, db: Database) -> AsyncIterator[Scene]:
    async with (
        running_worker(temporal_env.client, settings, db),
        running_cabinet(temporal_env.client, settings, db, CABINET) as cabinet,
    ):
        with temporal_env.auto_time_skipping_disabled():
            yield Scene(temporal_env, settings, db, cabinet)


@pytest.fixture
async def admin(db: Database) -> dict[str, str]:
    return await admin_headers(db)


@pytest.fixture
def api(settings: Settings, admin: dict[str, str]) -> Iterator[TestClient]:
    with TestClient(create_app(settings), headers=admin) as client:
        yield client


async def add_coupon(db: Database, **fields: object) -> None:
    spec = Coupon(code=CODE, description="10 % off", kind=CouponKind.PERCENT, value=1000, **fields)
    async with db.transaction() as session:
        session.add(CouponRow(**spec.model_dump(), redeemed_count=0))


async def order_with_coupon(db: Database, *, at: datetime = NOON_ISH, code: str | None = CODE) -> str:
    """A swap order as the API creates it for a rider who gave a coupon, asked for at `at`."""
    order_id = uuid.uuid4().hex
    async with db.transaction() as session:
        session.add(
            SwapOrder(
                id=order_id,
                rider_id=RIDER,
                cabinet_id=CABINET,
                idempotency_key=order_id,
                steps=[],
                created_at=at,
                coupon_code=code,
            )
        )
    return order_id


async def start(scene: Scene, order_id: str) -> WorkflowHandle[SwapWorkflow, SwapProgress]:
    request = swap_request(scene.settings, order_id=order_id, rider_id=RIDER, cabinet_id=CABINET, coupon_code=CODE)
    return await scene.env.client.start_workflow(
        SwapWorkflow.run, request, id=swap_workflow_id(order_id), task_queue=scene.settings.temporal.task_queue
    )


async def coupon_row(db: Database) -> CouponRow:
    async with db.sessions() as session:
        row = await session.get(CouponRow, CODE)
    assert row is not None
    return row


async def redemption(db: Database, order_id: str) -> CouponRedemption:
    async with db.sessions() as session:
        row = await session.scalar(select(CouponRedemption).where(CouponRedemption.order_id == order_id))
    assert row is not None
    return row


async def captured(db: Database, order_id: str) -> SandboxPayment:
    async with db.sessions() as session:
        payment = await session.scalar(
            select(SandboxPayment).where(SandboxPayment.idempotency_key == f"swap:{order_id}:charge")
        )
    assert payment is not None
    return payment


# ----------------------------------------------------------------------------------------- swaps


async def test_a_swap_with_a_coupon_charges_the_discounted_price_and_records_the_breakdown(
    scene: Scene, api: TestClient
) -> None:
    await add_coupon(scene.db)
    order_id = await order_with_coupon(scene.db)
    handle = await start(scene, order_id)
    await scene.insert(order_id, await scene.rider_pack())
    await scene.take(order_id)
    result = await handle.result()
    assert result.status == SwapStatus.COMPLETED, result
    order = await scene.order(order_id)
    assert (order.price_minor, order.currency, order.coupon_code) == (540, "CNY", CODE)
    assert order.price_breakdown is not None
    assert [(line["stage"], line["change_minor"]) for line in order.price_breakdown["lines"]] == [
        ("base", 600),
        ("coupon", -60),
    ]
    assert (await captured(scene.db, order_id)).amount_minor == 540
    assert (await redemption(scene.db, order_id)).released_at is None
    assert (await coupon_row(scene.db)).redeemed_count == 1
    report = await check_invariants(scene.db)
    assert report.ok, report.violations
    shown = api.get(f"/v1/swaps/{order_id}").json()
    assert (shown["price_minor"], shown["coupon_code"]) == (540, CODE)
    assert shown["price_breakdown"]["coupon_code"] == CODE and shown["price_breakdown"]["total_minor"] == 540


async def test_a_failed_swap_gives_its_coupon_back(scene: Scene) -> None:
    await add_coupon(scene.db, max_redemptions=1)
    order_id = await order_with_coupon(scene.db)
    handle = await start(scene, order_id)
    await scene.until_stage(order_id, SwapStage.RETURN_DOOR_OPEN)
    await scene.skip(scene.settings.swap.return_insert_timeout_s + 1)
    result = await handle.result()
    assert (result.status, result.failure_reason) == (SwapStatus.FAILED, "battery_not_returned_in_time")
    released = await redemption(scene.db, order_id)
    assert released.released_at is not None and released.release_reason == "battery_not_returned_in_time"
    assert (await coupon_row(scene.db)).redeemed_count == 0
    assert "release_coupon" in [step["step"] for step in (await scene.order(order_id)).steps]
    payment = await captured(scene.db, order_id)
    assert payment.amount_minor == payment.refunded_minor == 540


async def test_a_riders_first_swap_is_free_when_the_city_says_so(scene: Scene) -> None:
    async with scene.db.transaction() as session:
        session.add(
            PriceRule(name="first swap free", kind="first_swap_free", adjustment="set", value=0, city_code="SH")
        )
    order_id = await order_with_coupon(scene.db, code=None)
    handle = await scene.env.client.start_workflow(
        SwapWorkflow.run,
        swap_request(scene.settings, order_id=order_id, rider_id=RIDER, cabinet_id=CABINET),
        id=swap_workflow_id(order_id),
        task_queue=scene.settings.temporal.task_queue,
    )
    await scene.insert(order_id, await scene.rider_pack())
    await scene.take(order_id)
    assert (await handle.result()).status == SwapStatus.COMPLETED
    order = await scene.order(order_id)
    assert order.price_minor == 0 and order.price_breakdown is not None
    assert [line["stage"] for line in order.price_breakdown["lines"]] == ["base", "first_swap_free"]
    report = await check_invariants(scene.db)
    assert report.ok, report.violations


async def test_a_free_swap_that_fails_has_nothing_to_refund_and_keeps_the_money_rules(scene: Scene) -> None:
    async with scene.db.transaction() as session:
        session.add(
            PriceRule(name="first swap free", kind="first_swap_free", adjustment="set", value=0, city_code="SH")
        )
    order_id = await order_with_coupon(scene.db, code=None)
    handle = await start(scene, order_id)
    await scene.until_stage(order_id, SwapStage.RETURN_DOOR_OPEN)
    await scene.skip(scene.settings.swap.return_insert_timeout_s + 1)
    result = await handle.result()
    assert result.status == SwapStatus.FAILED
    assert [(step.step, step.outcome) for step in result.steps if step.step == "refund"] == [
        ("refund", "nothing_captured")
    ]
    assert "free: price 0, nothing charged" in [step["detail"] for step in (await scene.order(order_id)).steps]
    assert await count(scene.db, Refund) == await count(scene.db, Payment) == 0
    report = await check_invariants(scene.db)
    assert report.ok, report.violations


# ----------------------------------------------------------------------------------------- admission


async def test_a_coupon_used_up_before_admission_is_left_out_and_the_steps_say_why(
    settings: Settings, db: Database
) -> None:
    await add_coupon(db, max_redemptions=1)
    async with db.transaction() as session:  # someone else took the last one after the API checked it
        await session.execute(update(CouponRow).where(CouponRow.code == CODE).values(redeemed_count=1))
    await set_online(db, CABINET, True)
    order_id = await order_with_coupon(db)
    admission = await SwapRecords(db, settings).admit(
        swap_request(settings, order_id=order_id, rider_id=RIDER, cabinet_id=CABINET, coupon_code=CODE)
    )
    assert (admission.price_minor, admission.coupon_code) == (600, None)
    async with db.sessions() as session:
        order = await session.get(SwapOrder, order_id)
        redemptions = await session.scalar(select(func.count()).select_from(CouponRedemption))
    assert order is not None and order.price_breakdown is not None
    assert order.price_breakdown["coupon_rejected"] == "coupon_exhausted"
    assert {"step": "coupon", "outcome": "not_applied", "detail": f"{CODE}: coupon_exhausted"}.items() <= next(
        step for step in order.steps if step["step"] == "coupon"
    ).items()
    assert redemptions == 0


async def test_a_swap_is_priced_as_of_the_riders_request_not_of_its_admission(settings: Settings, db: Database) -> None:
    async with db.transaction() as session:
        session.add(
            PriceRule(
                name="SH evening peak",
                kind="peak",
                adjustment="percent",
                value=2000,
                city_code="SH",
                start_local=datetime(2026, 1, 1, 18).time(),
                end_local=datetime(2026, 1, 1, 21).time(),
            )
        )
    await set_online(db, CABINET, True)
    evening = datetime(2026, 11, 20, 11, 30, tzinfo=UTC)  # 19:30 in Shanghai
    order_id = await order_with_coupon(db, at=evening, code=None)
    admission = await SwapRecords(db, settings).admit(
        swap_request(settings, order_id=order_id, rider_id=RIDER, cabinet_id=CABINET)
    )
    assert admission.price_minor == 720


# ----------------------------------------------------------------------------------------- API


def test_a_quote_shows_what_the_rider_would_pay_now_line_by_line(api: TestClient) -> None:
    assert (
        api.post(
            "/v1/pricing/rules",
            json={
                "name": "big pack",
                "kind": "battery_model",
                "adjustment": "fixed",
                "value": 100,
                "battery_model": "LFP-60V-32Ah",
            },
        ).status_code
        == 201
    )
    assert api.post("/v1/pricing/coupons", json={"code": "ten", "kind": "percent", "value": 1000}).status_code == 201
    response = api.get("/v1/prices/quote", params={"rider_id": RIDER, "cabinet_id": CABINET, "coupon_code": "TEN"})
    assert response.status_code == 200, response.json()
    quoted = response.json()
    assert [(line["stage"], line["price_minor"]) for line in quoted["lines"]] == [
        ("base", 600),
        ("battery_model", 700),
        ("coupon", 630),
    ]
    assert (quoted["total_minor"], quoted["currency"], quoted["coupon_code"]) == (630, "CNY", "TEN")


def test_starting_a_swap_with_an_expired_coupon_is_a_422_problem_and_creates_no_order(api: TestClient) -> None:
    yesterday = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    api.post("/v1/pricing/coupons", json={"code": "OLD", "kind": "percent", "value": 1000, "valid_until": yesterday})
    response = api.post(
        "/v1/swaps",
        json={"rider_id": RIDER, "cabinet_id": CABINET, "coupon_code": "old"},
        headers={"Idempotency-Key": "k-expired"},
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert (response.json()["title"], response.json()["reason"]) == ("Coupon not applicable", "coupon_expired")
    assert api.get("/v1/stats").json()["swaps_in_flight"] == 0


def test_an_unknown_coupon_is_a_422_problem_for_a_quote_and_a_swap(api: TestClient) -> None:
    quoted = api.get("/v1/prices/quote", params={"rider_id": RIDER, "cabinet_id": CABINET, "coupon_code": "NOPE"})
    started = api.post(
        "/v1/swaps",
        json={"rider_id": RIDER, "cabinet_id": CABINET, "coupon_code": "NOPE"},
        headers={"Idempotency-Key": "k-unknown"},
    )
    assert (quoted.status_code, quoted.json()["reason"]) == (422, "coupon_unknown")
    assert (started.status_code, started.json()["reason"]) == (422, "coupon_unknown")


def test_a_coupon_used_up_by_the_rider_is_a_422_problem(api: TestClient, settings: Settings) -> None:
    api.post(
        "/v1/pricing/coupons",
        json={"code": "ONCE", "kind": "fixed", "value": 100, "currency": "CNY", "max_per_rider": 1},
    )
    engine = create_sync_engine(settings.effective_database_url)
    with engine.begin() as conn:  # the rider redeemed it on an earlier swap
        conn.execute(
            SwapOrder.__table__.insert().values(
                id="earlier",
                rider_id=RIDER,
                cabinet_id=CABINET,
                idempotency_key="earlier",
                status="completed",
                stage="completed",
                steps=[],
                created_at=NOON_ISH,
                updated_at=NOON_ISH,
            )
        )
        conn.execute(
            CouponRedemption.__table__.insert().values(
                coupon_code="ONCE",
                order_id="earlier",
                rider_id=RIDER,
                rider_seq=1,
                discount_minor=100,
                redeemed_at=NOON_ISH,
            )
        )
    engine.dispose()
    response = api.get("/v1/prices/quote", params={"rider_id": RIDER, "cabinet_id": CABINET, "coupon_code": "ONCE"})
    assert (response.status_code, response.json()["reason"]) == (422, "coupon_rider_limit_reached")


def test_price_rules_and_coupons_are_listed_once_created(api: TestClient) -> None:
    rule = api.post(
        "/v1/pricing/rules",
        json={
            "name": "SH night",
            "kind": "off_peak",
            "adjustment": "percent",
            "value": -1500,
            "city_code": "SH",
            "start_local": "23:00",
            "end_local": "06:00",
        },
    ).json()
    api.post("/v1/pricing/coupons", json={"code": "SAVE1", "kind": "fixed", "value": 100, "currency": "CNY"})
    assert [r["id"] for r in api.get("/v1/pricing/rules", params={"city_code": "SH"}).json()] == [rule["id"]]
    assert api.get("/v1/pricing/rules", params={"city_code": "BER"}).json() == []
    coupons = api.get("/v1/pricing/coupons").json()
    assert [(c["code"], c["redeemed_count"]) for c in coupons] == [("SAVE1", 0)]


def test_a_second_coupon_with_the_same_code_is_a_409_problem(api: TestClient) -> None:
    body = {"code": "TWICE", "kind": "percent", "value": 500}
    assert api.post("/v1/pricing/coupons", json=body).status_code == 201
    assert api.post("/v1/pricing/coupons", json={**body, "code": "twice"}).status_code == 409


def test_a_peak_rule_without_its_window_is_a_422_problem(api: TestClient) -> None:
    response = api.post(
        "/v1/pricing/rules", json={"name": "peak", "kind": "peak", "adjustment": "percent", "value": 2000}
    )
    assert response.status_code == 422
    assert "start_local" in response.json()["detail"]


# ----------------------------------------------------------------------------------------- demo


async def test_the_demo_network_has_an_evening_peak_in_each_city(empty_database_url: str) -> None:
    upgrade(empty_database_url)
    engine = create_sync_engine(empty_database_url)
    seed_demo_network(engine, stations_per_city=1, riders_per_city=1)
    engine.dispose()
    database = Database(empty_database_url)
    try:
        async with database.sessions() as session:
            evenings = (
                ("cab-sh-001-1", "rider-sh-0001", datetime(2026, 11, 20, 11, tzinfo=UTC)),  # 19:00 local
                ("cab-ber-001-1", "rider-ber-0001", datetime(2026, 11, 20, 18, tzinfo=UTC)),
            )
            for cabinet, rider, evening in evenings:
                priced, _ = await price_swap(session, rider_id=rider, cabinet_id=cabinet, at=evening, coupon_code=None)
                assert [line.stage for line in priced.lines] == ["base", "peak"]
    finally:
        await database.dispose()
