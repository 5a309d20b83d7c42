"""Prices: what a rider would pay now (a quote with its breakdown), and the operators' price rules and
coupons (swapflow.domain.pricing says how they combine)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, status

from swapflow.api.auth import Admin, MoneyStaff, RiderOrMoneyStaff, check_rider_access
from swapflow.api.deps import DatabaseDep, SessionDep
from swapflow.api.problems import problem_responses
from swapflow.domain.clock import utcnow
from swapflow.domain.pricing import Coupon, PriceRule, PriceRuleSpec, Quote
from swapflow.services.network import find_rider
from swapflow.services.pricing import add_coupon, add_price_rule, check_coupon, coupons_for, price_rules, quote_swap

router = APIRouter(tags=["pricing"])


class CouponView(Coupon):
    """A stored coupon with how often it is redeemed now."""

    redeemed_count: int
    created_at: datetime


@router.get("/v1/prices/quote", response_model=Quote, responses=problem_responses(404))
async def get_quote(
    session: SessionDep,
    principal: RiderOrMoneyStaff,
    rider_id: Annotated[str, Query(min_length=1, max_length=40)],
    cabinet_id: Annotated[str, Query(min_length=1, max_length=40)],
    coupon_code: Annotated[str | None, Query(min_length=1, max_length=40)] = None,
) -> Quote:
    """What the rider would pay for a swap at the cabinet now, line by line. A coupon that cannot be
    used is a 422 problem whose `reason` says why, as it would be when starting the swap."""
    await check_rider_access(session, principal, rider_id, "rider", rider_id)
    await find_rider(session, rider_id)
    at = utcnow()
    if coupon_code is not None:
        return await check_coupon(session, rider_id=rider_id, cabinet_id=cabinet_id, at=at, coupon_code=coupon_code)
    return await quote_swap(session, rider_id=rider_id, cabinet_id=cabinet_id, at=at)


@router.get("/v1/pricing/rules", response_model=list[PriceRule])
async def list_rules(
    session: SessionDep, principal: MoneyStaff, city_code: Annotated[str | None, Query(max_length=16)] = None
) -> list[PriceRule]:
    """Price rules, oldest first: the network-wide ones and those of `city_code`, or of the caller's cities."""
    return await price_rules(session, principal.visible_cities(city_code))


@router.post(
    "/v1/pricing/rules", response_model=PriceRule, status_code=status.HTTP_201_CREATED, responses=problem_responses(404)
)
async def create_rule(spec: PriceRuleSpec, database: DatabaseDep, _: Admin) -> PriceRule:
    """Add a price rule (admins); it prices every swap admitted from now on."""
    async with database.transaction() as session:
        return await add_price_rule(session, spec)


@router.get("/v1/pricing/coupons", response_model=list[CouponView])
async def list_coupons(session: SessionDep, principal: MoneyStaff) -> list[CouponView]:
    """The coupons valid in the caller's cities (every one, for an admin), by code, with their live
    redemptions."""
    return [CouponView.model_validate(row) for row in await coupons_for(session, principal.cities)]


@router.post(
    "/v1/pricing/coupons",
    response_model=CouponView,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(409),
)
async def create_coupon(spec: Coupon, database: DatabaseDep, _: Admin) -> CouponView:
    """Add a coupon (admins); its code (case-insensitive) must be new."""
    async with database.transaction() as session:
        return CouponView.model_validate(await add_coupon(session, spec))
