"""How a swap is priced: each rule, their order, rounding, coupons and their limits (pure), and coupon
redemptions counted under concurrency on the real database."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, time, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from swapflow.db.engine import Database
from swapflow.db.pricing import Coupon as CouponRow
from swapflow.db.pricing import CouponRedemption
from swapflow.db.pricing import PriceRule as PriceRuleRow
from swapflow.domain.pricing import (
    Adjustment,
    Coupon,
    CouponKind,
    CouponRejection,
    CouponUsage,
    PriceRule,
    PricingContext,
    Quote,
    RuleKind,
    percent_of,
    quote,
)
from swapflow.services.pricing import coupon_named, redeem_coupon, release_redemption
from tests.swap_harness import new_order
from tests.test_ops_api import api, ops_sh  # noqa: F401  (fixtures shared with the ops API's tests)

# Friday 2026-11-20, 11:00 in Shanghai: no peak, no night.
NOON_ISH = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)
MODEL = "LFP-60V-32Ah"


def context(
    *,
    at: datetime = NOON_ISH,
    price: int = 600,
    completed: int = 3,
    city: str = "SH",
    currency: str = "CNY",
    model: str | None = MODEL,
) -> PricingContext:
    return PricingContext(
        city_code=city,
        currency=currency,
        timezone="Asia/Shanghai",
        city_price_minor=price,
        battery_model=model,
        at=at,
        completed_swaps=completed,
    )


def rule(
    rule_id: int = 1,
    kind: RuleKind = RuleKind.PEAK,
    adjustment: Adjustment = Adjustment.PERCENT,
    value: int = 2000,
    **fields: object,
) -> PriceRule:
    if kind in (RuleKind.PEAK, RuleKind.OFF_PEAK):
        fields = {"start_local": time(18), "end_local": time(21), **fields}
    return PriceRule(id=rule_id, name=f"rule {rule_id}", kind=kind, adjustment=adjustment, value=value, **fields)


def coupon(kind: CouponKind = CouponKind.PERCENT, value: int = 1000, **fields: object) -> Coupon:
    return Coupon(code="test10", kind=kind, value=value, **fields)


def with_coupon(
    c: Coupon, ctx: PricingContext | None = None, usage: CouponUsage | None = None, rules: list[PriceRule] | None = None
) -> Quote:
    return quote(ctx or context(), rules or [], coupon_code=c.code, coupon=c, usage=usage)


def stages(q: Quote) -> list[str]:
    return [line.stage for line in q.lines]


# ----------------------------------------------------------------------------------------- rules


def test_without_rules_the_price_is_the_city_price() -> None:
    q = quote(context(), [])
    assert (q.total_minor, q.currency, stages(q)) == (600, "CNY", ["base"])


def test_a_base_rule_for_the_city_replaces_its_price() -> None:
    q = quote(context(), [rule(kind=RuleKind.BASE, adjustment=Adjustment.SET, value=450, city_code="SH")])
    assert q.total_minor == 450 and q.lines[0].rule_id == 1


def test_a_battery_model_rule_applies_to_its_model_only() -> None:
    surcharge = rule(kind=RuleKind.BATTERY_MODEL, adjustment=Adjustment.FIXED, value=150, battery_model=MODEL)
    assert quote(context(), [surcharge]).total_minor == 750
    assert quote(context(model="NMC-48V-24Ah"), [surcharge]).total_minor == 600


def test_a_peak_window_is_read_in_the_city_local_time() -> None:
    peak = rule(city_code="SH")  # 18:00-21:00 local, +20 %
    assert quote(context(at=datetime(2026, 11, 20, 11, 30, tzinfo=UTC)), [peak]).total_minor == 720  # 19:30 SH
    assert quote(context(at=datetime(2026, 11, 20, 19, 30, tzinfo=UTC)), [peak]).total_minor == 600  # 03:30 SH


def test_an_off_peak_window_may_run_past_midnight() -> None:
    night = rule(kind=RuleKind.OFF_PEAK, value=-1500, start_local=time(23), end_local=time(6))
    assert quote(context(at=datetime(2026, 11, 20, 16, 0, tzinfo=UTC)), [night]).total_minor == 510  # 00:00 SH
    assert quote(context(at=datetime(2026, 11, 20, 21, 59, tzinfo=UTC)), [night]).total_minor == 510  # 05:59 SH
    assert quote(context(at=datetime(2026, 11, 20, 22, 0, tzinfo=UTC)), [night]).total_minor == 600  # 06:00 SH


def test_a_window_limited_to_weekdays_skips_the_others() -> None:
    weekday_peak = rule(weekdays=[1, 2, 3, 4, 5])
    friday, saturday = datetime(2026, 11, 20, 11, 0, tzinfo=UTC), datetime(2026, 11, 21, 11, 0, tzinfo=UTC)
    assert quote(context(at=friday), [weekday_peak]).total_minor == 720
    assert quote(context(at=saturday), [weekday_peak]).total_minor == 600


def test_the_first_swap_is_free_for_a_rider_who_never_completed_one() -> None:
    free = rule(kind=RuleKind.FIRST_SWAP_FREE, adjustment=Adjustment.SET, value=0)
    assert quote(context(completed=0), [free]).total_minor == 0
    assert quote(context(completed=1), [free]).total_minor == 600


def test_rules_apply_base_then_model_then_window_then_first_swap_then_coupon() -> None:
    rules = [
        rule(1, RuleKind.PEAK, Adjustment.PERCENT, 5000),
        rule(2, RuleKind.BATTERY_MODEL, Adjustment.FIXED, 100, battery_model=MODEL),
        rule(3, RuleKind.BASE, Adjustment.SET, 400),
    ]
    q = with_coupon(
        coupon(CouponKind.FIXED, 50, currency="CNY"), context(at=datetime(2026, 11, 20, 11, tzinfo=UTC)), rules=rules
    )
    assert stages(q) == ["base", "battery_model", "peak", "coupon"]
    assert [line.price_minor for line in q.lines] == [400, 500, 750, 700]  # +50 % of 500, not of 400
    assert [line.change_minor for line in q.lines] == [400, 100, 250, -50]


def test_in_a_stage_the_city_rule_beats_the_network_rule_then_priority_then_age() -> None:
    evening = context(at=datetime(2026, 11, 20, 11, tzinfo=UTC))
    network = rule(1, value=1000, priority=9)
    city_old, city_new = rule(2, value=2000, city_code="SH"), rule(3, value=3000, city_code="SH")
    assert quote(evening, [network, city_new, city_old]).lines[1].rule_id == 2
    urgent = rule(4, value=4000, city_code="SH", priority=1)
    assert quote(evening, [city_old, urgent]).lines[1].rule_id == 4


def test_an_inactive_or_out_of_date_rule_does_not_apply() -> None:
    at = datetime(2026, 11, 20, 11, tzinfo=UTC)
    assert quote(context(at=at), [rule(active=False)]).total_minor == 600
    assert quote(context(at=at), [rule(valid_until=at)]).total_minor == 600
    assert quote(context(at=at), [rule(valid_from=at + timedelta(seconds=1))]).total_minor == 600
    assert quote(context(at=at), [rule(valid_from=at, valid_until=at + timedelta(days=1))]).total_minor == 720


def test_percentages_round_half_up_to_whole_minor_units() -> None:
    assert percent_of(599, 1500) == 90  # 89.85
    assert percent_of(599, -1500) == -90
    assert percent_of(30, 1750) == 5  # 5.25
    assert percent_of(2, 2500) == 1  # 0.5 rounds up
    assert percent_of(2, -2500) == -1


def test_the_price_never_goes_below_zero() -> None:
    assert quote(context(), [rule(kind=RuleKind.BASE, adjustment=Adjustment.FIXED, value=-1000)]).total_minor == 0
    q = with_coupon(coupon(CouponKind.FIXED, 500, currency="CNY"), context(price=300))
    assert (q.total_minor, q.discount_minor) == (0, 300)


# ----------------------------------------------------------------------------------------- coupons


def test_a_percentage_coupon_takes_its_share_up_to_its_cap() -> None:
    assert with_coupon(coupon(value=1000)).total_minor == 540
    assert with_coupon(coupon(value=5000, max_discount_minor=100)).total_minor == 500


def test_a_fixed_coupon_takes_its_amount_in_its_currency_only() -> None:
    assert with_coupon(coupon(CouponKind.FIXED, 200, currency="CNY")).total_minor == 400
    euro = with_coupon(coupon(CouponKind.FIXED, 200, currency="EUR"))
    assert (euro.total_minor, euro.coupon_rejected) == (600, CouponRejection.WRONG_CURRENCY)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"active": False}, CouponRejection.INACTIVE),
        ({"valid_from": NOON_ISH + timedelta(minutes=1)}, CouponRejection.NOT_YET_VALID),
        ({"valid_until": NOON_ISH}, CouponRejection.EXPIRED),
        ({"city_codes": ["BER"]}, CouponRejection.WRONG_CITY),
        ({"battery_models": ["NMC-48V-24Ah"]}, CouponRejection.WRONG_BATTERY_MODEL),
        ({"min_price_minor": 601}, CouponRejection.BELOW_MINIMUM_PRICE),
    ],
)
def test_a_coupon_outside_its_limits_is_rejected_and_the_price_kept(
    fields: dict[str, object], reason: CouponRejection
) -> None:
    q = with_coupon(coupon(**fields))
    assert (q.total_minor, q.coupon_code, q.coupon_rejected, stages(q)) == (600, None, reason, ["base"])


def test_a_coupon_used_up_overall_or_by_the_rider_is_rejected() -> None:
    limited = coupon(max_redemptions=5, max_per_rider=2)
    assert with_coupon(limited, usage=CouponUsage(total=5, by_rider=0)).coupon_rejected == CouponRejection.EXHAUSTED
    assert (
        with_coupon(limited, usage=CouponUsage(total=4, by_rider=2)).coupon_rejected
        == CouponRejection.RIDER_LIMIT_REACHED
    )
    assert with_coupon(limited, usage=CouponUsage(total=4, by_rider=1)).coupon_rejected is None


def test_the_minimum_price_is_checked_against_the_price_before_the_coupon() -> None:
    assert with_coupon(coupon(min_price_minor=600)).total_minor == 540


def test_an_unknown_coupon_is_rejected() -> None:
    q = quote(context(), [], coupon_code="NOPE", coupon=None)
    assert (q.total_minor, q.coupon_rejected) == (600, CouponRejection.UNKNOWN)


def test_coupon_codes_are_case_insensitive() -> None:
    assert Coupon(code=" welcome10 ", kind=CouponKind.PERCENT, value=1000).code == "WELCOME10"


# ----------------------------------------------------------------------------------------- redemptions


async def add_coupon(database: Database, c: Coupon) -> Coupon:
    async with database.transaction() as session:
        session.add(CouponRow(**c.model_dump(), redeemed_count=0))
    return c


async def redeem(database: Database, c: Coupon, rider_id: str) -> CouponRejection | None:
    order_id = await new_order(database, rider_id, "cab-sh-001-1")
    async with database.transaction() as session:
        return await redeem_coupon(session, c, order_id=order_id, rider_id=rider_id, discount_minor=60)


async def redeemed_count(database: Database, code: str) -> int:
    async with database.sessions() as session:
        stored = await coupon_named(session, code)
        count = await session.scalar(select(CouponRow.redeemed_count).where(CouponRow.code == code))
    assert stored is not None
    return int(count or 0)


async def test_concurrent_redemptions_never_pass_the_total_limit(db: Database) -> None:
    c = await add_coupon(db, coupon(max_redemptions=3, max_per_rider=None))
    riders = [f"rider-{city}-000{n}" for city in ("sh", "sz") for n in range(1, 5)]
    outcomes = await asyncio.gather(*(redeem(db, c, rider) for rider in riders))
    assert outcomes.count(None) == 3
    assert outcomes.count(CouponRejection.EXHAUSTED) == 5
    assert await redeemed_count(db, c.code) == 3


async def test_concurrent_redemptions_by_one_rider_never_pass_the_per_rider_limit(db: Database) -> None:
    c = await add_coupon(db, coupon(max_redemptions=100, max_per_rider=2))
    outcomes = await asyncio.gather(*(redeem(db, c, "rider-sh-0001") for _ in range(5)))
    assert outcomes.count(None) == 2
    assert outcomes.count(CouponRejection.RIDER_LIMIT_REACHED) == 3
    assert await redeemed_count(db, c.code) == 2


async def test_a_released_redemption_frees_the_coupon_for_the_rider_once(db: Database) -> None:
    c = await add_coupon(db, coupon(max_redemptions=1, max_per_rider=1))
    order_id = await new_order(db, "rider-sh-0001", "cab-sh-001-1")
    async with db.transaction() as session:
        assert await redeem_coupon(session, c, order_id=order_id, rider_id="rider-sh-0001", discount_minor=60) is None
    assert await redeem(db, c, "rider-sh-0001") == CouponRejection.EXHAUSTED
    for _ in range(2):  # a retried release changes nothing
        async with db.transaction() as session:
            await release_redemption(session, order_id, "swap failed")
    assert await redeemed_count(db, c.code) == 0
    assert await redeem(db, c, "rider-sh-0001") is None
    async with db.sessions() as session:
        live = await session.scalar(
            select(func.count()).select_from(CouponRedemption).where(CouponRedemption.released_at.is_(None))
        )
    assert live == 1


# ----------------------------------------------------------------------------------------- who sees them


async def test_an_operator_of_one_city_reads_its_and_the_network_wide_price_rules_only(
    api: TestClient, db: Database, ops_sh: dict[str, str]
) -> None:
    async with db.transaction() as session:
        for name, city in (("network", None), ("shanghai", "SH"), ("shenzhen", "SZ")):
            session.add(PriceRuleRow(name=name, kind="base", adjustment="set", value=500, city_code=city))
    assert [r["name"] for r in api.get("/v1/pricing/rules", headers=ops_sh).json()] == ["network", "shanghai"]
    assert api.get("/v1/pricing/rules", params={"city_code": "SZ"}, headers=ops_sh).status_code == 403


async def test_an_operator_of_one_city_reads_the_coupons_valid_there_only(
    api: TestClient, db: Database, ops_sh: dict[str, str]
) -> None:
    for code, cities in (
        ("EVERYWHERE", None),
        ("SHANGHAI", ["SH"]),
        ("SHENZHEN", ["SZ"]),
        ("SOUTH", ["SZ", "GZ"]),
        ("BOTH", ["SZ", "SH"]),
    ):
        await add_coupon(db, Coupon(code=code, kind=CouponKind.PERCENT, value=1000, city_codes=cities))
    codes = [c["code"] for c in api.get("/v1/pricing/coupons", headers=ops_sh).json()]
    assert codes == ["BOTH", "EVERYWHERE", "SHANGHAI"]
