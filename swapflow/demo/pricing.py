"""Demo price rules and coupons: an evening peak in each city, a network-wide night discount, and two
coupons. Seeded with the demo network (swapflow.demo.network)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, time

from sqlalchemy.orm import Session

from swapflow.db.pricing import Coupon, PriceRule
from swapflow.domain.pricing import Adjustment, CouponKind, RuleKind


def seed_demo_pricing(session: Session, city_codes: Iterable[str]) -> None:
    """Add the demo rules and coupons for these cities."""
    for code in city_codes:
        session.add(
            PriceRule(
                name=f"{code} evening peak",
                kind=RuleKind.PEAK,
                adjustment=Adjustment.PERCENT,
                value=2_000,
                city_code=code,
                start_local=time(18),
                end_local=time(21),
            )
        )
    session.add(
        PriceRule(
            name="night off-peak",
            kind=RuleKind.OFF_PEAK,
            adjustment=Adjustment.PERCENT,
            value=-1_500,
            start_local=time(23),
            end_local=time(6),
        )
    )
    session.add(
        Coupon(
            code="WELCOME10",
            description="10 % off (at most 1.00), once per rider",
            kind=CouponKind.PERCENT,
            value=1_000,
            max_per_rider=1,
            max_discount_minor=100,
        )
    )
    session.add(
        Coupon(
            code="SAVE2",
            description="2 yuan off a swap of 3 yuan or more",
            kind=CouponKind.FIXED,
            value=200,
            currency="CNY",
            min_price_minor=300,
            max_redemptions=1_000,
            max_per_rider=3,
            valid_until=datetime(2028, 1, 1, tzinfo=UTC),
        )
    )
