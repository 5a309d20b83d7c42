"""The price book in the database: loading the rules and coupon that price a swap, and redeeming and
releasing coupons so that no limit is passed however many swaps redeem at once. The arithmetic is in
swapflow.domain.pricing; this module only reads and writes rows."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.network import Battery, Cabinet, City, Station
from swapflow.db.pricing import Coupon as CouponRow
from swapflow.db.pricing import CouponRedemption
from swapflow.db.pricing import PriceRule as PriceRuleRow
from swapflow.db.swaps import SwapOrder
from swapflow.domain.clock import as_utc, utcnow
from swapflow.domain.errors import Conflict, NotFound, Refused
from swapflow.domain.network import CustodianKind
from swapflow.domain.pricing import (
    Coupon,
    CouponRejection,
    CouponUsage,
    PriceRule,
    PriceRuleSpec,
    PricingContext,
    Quote,
    normalise_code,
    quote,
)
from swapflow.domain.swaps import SwapStatus


class UnpricedCabinet(LookupError):
    """The cabinet is unknown, or belongs to no city: nothing to price a swap by."""


async def pricing_context(session: AsyncSession, *, rider_id: str, cabinet_id: str, at: datetime) -> PricingContext:
    """What a swap by `rider_id` at `cabinet_id` at time `at` is priced by: the cabinet's city, the model
    of the rider's pack (their vehicle takes that model, and it is known before a charged pack is picked,
    so a quote equals the charge) and how many swaps the rider has completed."""
    city = await session.scalar(
        select(City)
        .join(Station, Station.city_code == City.code)
        .join(Cabinet, Cabinet.station_id == Station.id)
        .where(Cabinet.id == cabinet_id)
    )
    if city is None:
        raise UnpricedCabinet(f"no priced cabinet {cabinet_id!r}")
    model = await session.scalar(
        select(Battery.model).where(Battery.custodian_kind == CustodianKind.RIDER, Battery.custodian_ref == rider_id)
    )
    completed = await session.scalar(
        select(func.count())
        .select_from(SwapOrder)
        .where(SwapOrder.rider_id == rider_id, SwapOrder.status == SwapStatus.COMPLETED)
    )
    return PricingContext(
        city_code=city.code,
        currency=city.currency,
        timezone=city.timezone,
        city_price_minor=city.swap_price_minor,
        battery_model=model,
        at=as_utc(at),
        completed_swaps=int(completed or 0),
    )


async def rules_for(session: AsyncSession, city_code: str) -> list[PriceRule]:
    """The active rules that may apply in a city (its own and the network-wide ones)."""
    rows = await session.scalars(
        select(PriceRuleRow).where(
            PriceRuleRow.active.is_(True), or_(PriceRuleRow.city_code == city_code, PriceRuleRow.city_code.is_(None))
        )
    )
    return [PriceRule.model_validate(row) for row in rows]


async def coupon_named(session: AsyncSession, code: str) -> Coupon | None:
    """The stored coupon of a code as a rider typed it."""
    row = await session.get(CouponRow, normalise_code(code))
    return Coupon.model_validate(row) if row is not None else None


async def coupon_usage(session: AsyncSession, code: str, rider_id: str) -> CouponUsage:
    """Live redemptions of a coupon: overall, and by one rider."""
    total = await session.scalar(select(CouponRow.redeemed_count).where(CouponRow.code == code))
    by_rider = await session.scalar(
        select(func.count())
        .select_from(CouponRedemption)
        .where(
            CouponRedemption.coupon_code == code,
            CouponRedemption.rider_id == rider_id,
            CouponRedemption.released_at.is_(None),
        )
    )
    return CouponUsage(total=int(total or 0), by_rider=int(by_rider or 0))


async def price_swap(
    session: AsyncSession, *, rider_id: str, cabinet_id: str, at: datetime, coupon_code: str | None
) -> tuple[Quote, Coupon | None]:
    """The quote for a swap, and the coupon it names (None if none or unknown). Redeems nothing."""
    ctx = await pricing_context(session, rider_id=rider_id, cabinet_id=cabinet_id, at=at)
    rules = await rules_for(session, ctx.city_code)
    coupon = await coupon_named(session, coupon_code) if coupon_code else None
    usage = await coupon_usage(session, coupon.code, rider_id) if coupon else None
    return quote(ctx, rules, coupon_code=coupon_code, coupon=coupon, usage=usage), coupon


async def quote_swap(session: AsyncSession, *, rider_id: str, cabinet_id: str, at: datetime) -> Quote:
    """What a swap by the rider at the cabinet costs at `at`, without a coupon (NotFound: no such cabinet)."""
    try:
        priced, _ = await price_swap(session, rider_id=rider_id, cabinet_id=cabinet_id, at=at, coupon_code=None)
    except UnpricedCabinet as exc:
        raise NotFound("cabinet", cabinet_id, detail=str(exc)) from exc
    return priced


async def check_coupon(
    session: AsyncSession, *, rider_id: str, cabinet_id: str, at: datetime, coupon_code: str
) -> Quote:
    """The quote with the rider's coupon applied; Refused, its `reason` naming why, if the coupon cannot
    be used (NotFound: no such cabinet)."""
    try:
        priced, _ = await price_swap(session, rider_id=rider_id, cabinet_id=cabinet_id, at=at, coupon_code=coupon_code)
    except UnpricedCabinet as exc:
        raise NotFound("cabinet", cabinet_id, detail=str(exc)) from exc
    if priced.coupon_rejected is not None:
        raise Refused(
            "Coupon not applicable",
            f"coupon {coupon_code!r} cannot be used for this swap: {priced.coupon_rejected}",
            reason=priced.coupon_rejected.value,
        )
    return priced


async def add_price_rule(session: AsyncSession, spec: PriceRuleSpec) -> PriceRule:
    """Store a price rule; it prices every swap admitted from then on (NotFound: no such city)."""
    if spec.city_code is not None and await session.get(City, spec.city_code) is None:
        raise NotFound("city", spec.city_code)
    row = PriceRuleRow(**spec.model_dump())
    session.add(row)
    await session.flush()
    return PriceRule.model_validate(row)


async def price_rules(session: AsyncSession, cities: list[str] | None) -> list[PriceRule]:
    """Price rules, oldest first: the network-wide ones and those of `cities` (None: every city's)."""
    query = select(PriceRuleRow).order_by(PriceRuleRow.id)
    if cities is not None:
        query = query.where(PriceRuleRow.city_code.in_(cities) | PriceRuleRow.city_code.is_(None))
    return [PriceRule.model_validate(row) for row in await session.scalars(query)]


async def coupons_for(session: AsyncSession, cities: frozenset[str] | None) -> list[CouponRow]:
    """The coupons valid in any of `cities` (None: every coupon), by code."""
    rows = await session.scalars(select(CouponRow).order_by(CouponRow.code))
    return [row for row in rows if row.city_codes is None or cities is None or not cities.isdisjoint(row.city_codes)]


async def add_coupon(session: AsyncSession, coupon: Coupon) -> CouponRow:
    """Store a new coupon (Conflict: its code, case-insensitive, is taken)."""
    row = CouponRow(**coupon.model_dump(), redeemed_count=0)
    session.add(row)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Conflict("Coupon exists", f"a coupon {coupon.code!r} exists already") from exc
    return row


async def redeem_coupon(
    session: AsyncSession, coupon: Coupon, *, order_id: str, rider_id: str, discount_minor: int
) -> CouponRejection | None:
    """Count one use of `coupon` by a swap, or say which limit stops it. Safe under concurrency on both
    back ends: the total moves by a conditional UPDATE (the row lock on PostgreSQL, the single writer
    on SQLite serialise it), and a rider's uses take numbered seats under a unique constraint. Calling
    it again for the same order changes nothing."""
    if await session.scalar(select(CouponRedemption.id).where(CouponRedemption.order_id == order_id)):
        return None
    counted = await session.execute(
        update(CouponRow)
        .where(
            CouponRow.code == coupon.code,
            or_(CouponRow.max_redemptions.is_(None), CouponRow.redeemed_count < CouponRow.max_redemptions),
        )
        .values(redeemed_count=CouponRow.redeemed_count + 1)
    )
    if counted.rowcount != 1:  # type: ignore[attr-defined]  # an UPDATE's result is a CursorResult
        return CouponRejection.EXHAUSTED
    seats: list[int | None] = [None]
    if coupon.max_per_rider is not None:
        taken = set(
            (
                await session.scalars(
                    select(CouponRedemption.rider_seq).where(
                        CouponRedemption.coupon_code == coupon.code,
                        CouponRedemption.rider_id == rider_id,
                        CouponRedemption.rider_seq.is_not(None),
                    )
                )
            ).all()
        )
        seats = [seat for seat in range(1, coupon.max_per_rider + 1) if seat not in taken]
    for seat in seats:
        try:
            async with session.begin_nested():
                session.add(
                    CouponRedemption(
                        coupon_code=coupon.code,
                        order_id=order_id,
                        rider_id=rider_id,
                        rider_seq=seat,
                        discount_minor=discount_minor,
                    )
                )
            return None
        except IntegrityError:
            continue  # a concurrent redemption by the same rider took this seat
    await session.execute(
        update(CouponRow).where(CouponRow.code == coupon.code).values(redeemed_count=CouponRow.redeemed_count - 1)
    )
    return CouponRejection.RIDER_LIMIT_REACHED


async def release_redemption(session: AsyncSession, order_id: str, reason: str) -> str | None:
    """Give back the coupon a failed swap redeemed, once: the rider may use it again and it counts no
    more against the total. Returns the coupon's code, or None if there was nothing (left) to release."""
    redemption = await session.scalar(
        select(CouponRedemption).where(CouponRedemption.order_id == order_id, CouponRedemption.released_at.is_(None))
    )
    if redemption is None:
        return None
    redemption.released_at = utcnow()
    redemption.release_reason = reason[:200]
    redemption.rider_seq = None
    await session.execute(
        update(CouponRow)
        .where(CouponRow.code == redemption.coupon_code)
        .values(redeemed_count=CouponRow.redeemed_count - 1)
    )
    return redemption.coupon_code


async def live_redemption(session: AsyncSession, order_id: str) -> str | None:
    """The code of the coupon an order holds redeemed now, if any."""
    return await session.scalar(
        select(CouponRedemption.coupon_code).where(
            CouponRedemption.order_id == order_id, CouponRedemption.released_at.is_(None)
        )
    )
