"""Prices: what a rider would pay now (a quote with its breakdown), and the operators' price rules and
coupons (swapflow.domain.pricing says how they combine)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, status
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.api.auth import Admin, MoneyStaff, RiderOrMoneyStaff, check_rider_access
from swapflow.api.deps import DatabaseDep, SessionDep
from swapflow.api.problems import Problem, problem_responses
from swapflow.db.network import City, Rider
from swapflow.db.pricing import Coupon as CouponRow
from swapflow.db.pricing import PriceRule as PriceRuleRow
from swapflow.domain.clock import utcnow
from swapflow.domain.pricing import Coupon, PriceRule, PriceRuleSpec, Quote
from swapflow.services.pricing import UnpricedCabinet, price_swap

router = APIRouter(tags=["pricing"])


class CouponView(Coupon):
    """A stored coupon with how often it is redeemed now."""

    redeemed_count: int
    created_at: datetime


async def check_coupon(
    session: AsyncSession, *, rider_id: str, cabinet_id: str, at: datetime, coupon_code: str
) -> Quote:
    """The quote with the rider's coupon applied, or a 422 problem naming why the coupon cannot be used."""
    try:
        priced, _ = await price_swap(session, rider_id=rider_id, cabinet_id=cabinet_id, at=at, coupon_code=coupon_code)
    except UnpricedCabinet as exc:
        raise Problem(404, "Unknown cabinet", str(exc)) from exc
    if priced.coupon_rejected is not None:
        raise Problem(
            422,
            "Coupon not applicable",
            f"coupon {coupon_code!r} cannot be used for this swap: {priced.coupon_rejected}",
            reason=priced.coupon_rejected.value,
        )
    return priced


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
    if await session.get(Rider, rider_id) is None:
        raise Problem(404, "Unknown rider", f"no rider {rider_id!r}")
    at = utcnow()
    if coupon_code is not None:
        return await check_coupon(session, rider_id=rider_id, cabinet_id=cabinet_id, at=at, coupon_code=coupon_code)
    try:
        priced, _ = await price_swap(session, rider_id=rider_id, cabinet_id=cabinet_id, at=at, coupon_code=None)
    except UnpricedCabinet as exc:
        raise Problem(404, "Unknown cabinet", str(exc)) from exc
    return priced


@router.get("/v1/pricing/rules", response_model=list[PriceRule])
async def list_rules(
    session: SessionDep, principal: MoneyStaff, city_code: Annotated[str | None, Query(max_length=16)] = None
) -> list[PriceRule]:
    """Price rules, oldest first: the network-wide ones and those of `city_code`, or of the caller's cities."""
    cities = principal.visible_cities(city_code)
    query = select(PriceRuleRow).order_by(PriceRuleRow.id)
    if cities is not None:
        query = query.where(PriceRuleRow.city_code.in_(cities) | PriceRuleRow.city_code.is_(None))
    return [PriceRule.model_validate(row) for row in await session.scalars(query)]


@router.post(
    "/v1/pricing/rules", response_model=PriceRule, status_code=status.HTTP_201_CREATED, responses=problem_responses(404)
)
async def create_rule(spec: PriceRuleSpec, database: DatabaseDep, _: Admin) -> PriceRule:
    """Add a price rule (admins); it prices every swap admitted from now on."""
    async with database.transaction() as session:
        if spec.city_code is not None and await session.get(City, spec.city_code) is None:
            raise Problem(404, "Unknown city", f"no city {spec.city_code!r}")
        row = PriceRuleRow(**spec.model_dump())
        session.add(row)
        await session.flush()
        return PriceRule.model_validate(row)


@router.get("/v1/pricing/coupons", response_model=list[CouponView])
async def list_coupons(session: SessionDep, principal: MoneyStaff) -> list[CouponView]:
    """The coupons valid in the caller's cities (every one, for an admin), by code, with their live
    redemptions."""
    rows = await session.scalars(select(CouponRow).order_by(CouponRow.code))
    return [
        CouponView.model_validate(row)
        for row in rows
        if row.city_codes is None or principal.cities is None or not principal.cities.isdisjoint(row.city_codes)
    ]


@router.post(
    "/v1/pricing/coupons",
    response_model=CouponView,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(409),
)
async def create_coupon(spec: Coupon, database: DatabaseDep, _: Admin) -> CouponView:
    """Add a coupon (admins); its code (case-insensitive) must be new."""
    async with database.transaction() as session:
        row = CouponRow(**spec.model_dump(), redeemed_count=0)
        session.add(row)
        try:
            await session.flush()
        except IntegrityError as exc:
            raise Problem(409, "Coupon exists", f"a coupon {spec.code!r} exists already") from exc
        return CouponView.model_validate(row)
